"""The ``evalnet_select`` labeler (docs/method.md §6, EvalNet approach).

Each unlabeled image's candidate masks are every teacher's mask (generation 1:
all LDT models; later: the stage's students) plus, for an image selected
before, the mask selected for it then. The run's EvalNet ensemble scores every
candidate; the best one is kept when its score reaches the threshold, else the
image is dropped. The selection accumulates: an image selected earlier stays
selected (possibly with a better mask now).

The accumulated selection of each chain and generation is kept in the
labeler's state store (``LabelingInput.services.state``; in a run
``RUN/state/evalnet_select/``); a generation whose selection exists reuses it,
and the next generation starts from it, so a resumed run reproduces the same
pseudo labels. The run's EvalNet ensemble arrives as ``services.scorer``; the
threshold is the part's setting, else the one chosen on val
(``services.auto_thresholds``).

The part is registered in the labelers' registry here, in the EvalNet layer, so
the pseudo layer below needs to know nothing of EvalNets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field

from imseg.parts import Needs
from imseg.pseudo.labelers import (
    LABELERS,
    BatchResult,
    LabelerPart,
    LabelingInput,
    PartServices,
    PseudoSet,
    Scorer,
    label_in_batches,
    teacher_probs,
)
from imseg.storage import load_checkpoint, save_checkpoint


@dataclass
class Selection:
    """The accumulated pseudo labels of a chain: which images, which masks, their scores."""

    source: torch.Tensor
    """long (S,): index of each selected image in the unlabeled split, ascending."""
    labels: torch.Tensor
    """uint8 (S, L, H, W)."""
    scores: torch.Tensor
    """float (S,): the ensemble's predicted IoU of the selected mask."""

    def to_state(self) -> dict[str, torch.Tensor]:
        return {"source": self.source, "labels": self.labels, "scores": self.scores}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Selection:
        return cls(state["source"], state["labels"], state["scores"])

    def lookup(self, n: int) -> torch.Tensor:
        """long (n,): each image's row in the selection, -1 where it is not selected."""
        rows = torch.full((n,), -1, dtype=torch.long)
        rows[self.source] = torch.arange(self.source.numel())
        return rows


def selection_path(run_dir: Path, folder: str) -> Path:
    """Where the selection of a chain's generation (``Place.folder()``) is saved."""
    return Path(run_dir) / "state" / "evalnet_select" / f"{folder}.pt"


def save_selection(path: Path, selection: Selection) -> None:
    save_checkpoint(path, selection.to_state())


def load_selection(path: Path) -> Selection:
    return Selection.from_state(load_checkpoint(path))


def select_batch(x: torch.Tensor, candidates: torch.Tensor, previous: torch.Tensor | None,
                 previous_ok: torch.Tensor, score: Scorer,
                 threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chosen mask, its score and whether to keep each image of one batch.

    ``candidates`` ``(T, B, L, H, W)``; ``previous`` ``(B, L, H, W)`` holds the
    earlier selection where ``previous_ok`` is True. Candidates are scored in
    one call; an earlier-selected image is always kept.
    """
    t, b = candidates.shape[:2]
    scores = score(x.repeat(t, 1, 1, 1), candidates.flatten(0, 1)).view(t, b).to(x.device)
    if previous is not None and bool(previous_ok.any()):
        rows = previous_ok.nonzero().squeeze(1).to(x.device)
        prev_scores = torch.full((1, b), -torch.inf, device=x.device)
        prev_scores[0, rows] = score(x[rows], previous[rows]).to(x.device)
        candidates = torch.cat([candidates, previous.unsqueeze(0)])
        scores = torch.cat([scores, prev_scores])
    best, which = scores.max(dim=0)  # the previous mask scores -inf where there is none
    chosen = candidates[which, torch.arange(b, device=x.device)]
    keep = (best >= threshold) | previous_ok.to(x.device)
    return chosen, best, keep


def select(inp: LabelingInput, score: Scorer, threshold: float,
           previous: Selection | None) -> PseudoSet:
    """Pseudo-label ``inp.images`` by EvalNet selection among the teachers' masks."""
    task, n = inp.task, inp.images.shape[0]
    prev_rows = previous.lookup(n) if previous is not None else torch.full((n,), -1)
    kept_scores: list[torch.Tensor] = []
    position = [0]  # label_in_batches walks the images in order, one batch at a time

    def batch(x: torch.Tensor) -> BatchResult:
        start = position[0]
        position[0] += x.shape[0]
        probs = teacher_probs(inp.teachers, x, task, inp.device, inp.amp)
        votes = task.to_label(probs.flatten(0, 1)).unflatten(0, probs.shape[:2])
        rows = prev_rows[start : start + x.shape[0]]
        ok = rows >= 0
        prev = None
        if previous is not None:
            prev = torch.zeros_like(votes[0])
            prev[ok.to(x.device)] = previous.labels[rows[ok]].to(x.device)
        chosen, best, keep = select_batch(x, votes, prev, ok, score, threshold)
        kept_scores.append(best[keep].float().cpu())
        return BatchResult(x, chosen, keep=keep, teacher_labels=votes)

    pseudo = label_in_batches(inp, batch)
    pseudo.scores = torch.cat(kept_scores) if kept_scores else torch.empty(0)
    return pseudo


def from_selection(images: torch.Tensor, selection: Selection) -> PseudoSet:
    """The PseudoSet of a saved selection (a resumed generation)."""
    return PseudoSet(images[selection.source], selection.labels, selection.source,
                     scores=selection.scores, n_input=int(images.shape[0]))


@LABELERS.register
class EvalNetSelectLabeler(LabelerPart):
    """The saved selection of this generation when there is one, else a new selection that
    starts from the previous generation's and is saved."""

    name: Literal["evalnet_select"] = "evalnet_select"
    threshold: float | None = Field(None, description="None: chosen on val")
    GLOBALS: ClassVar[dict[str, str]] = {"threshold": "evalnet.threshold"}

    def needs(self) -> Needs:
        return Needs(evalnet_kinds=("evalnet",), state="evalnet_select", scores_pairs=True)

    def label(self, inp: LabelingInput) -> PseudoSet:
        services, generation = inp.services, inp.generation
        if services.state is None or services.scorer is None:
            raise ValueError("evalnet_select needs services.scorer and .state")
        saved = services.state.load(generation)
        if saved is not None:
            return from_selection(inp.images, Selection.from_state(saved))
        before = services.state.load(generation - 1) if generation > 1 else None
        previous = Selection.from_state(before) if before is not None else None
        pseudo = select(inp, services.scorer, self.threshold_in(services), previous)
        assert pseudo.scores is not None
        services.state.save(generation, Selection(pseudo.source, pseudo.labels,
                                                  pseudo.scores).to_state())
        return pseudo

    def threshold_in(self, services: PartServices) -> float:
        """The score a mask needs: the setting, else the one chosen on val."""
        if self.threshold is not None:
            return float(self.threshold)
        if services.auto_thresholds is None:
            raise ValueError("evalnet_select without a threshold needs "
                             "services.auto_thresholds")
        return float(services.auto_thresholds()["threshold"])
