"""Every kind of recipe part and its registry (``PART_KINDS``), and the parts the
generation loop implements itself: teachers, noise, students and start.

Labelers live in :mod:`imseg.pseudo.labelers` (``evalnet_select`` in
:mod:`imseg.evalnet.select`), copies in :mod:`imseg.pseudo.copies`, trainers in
:mod:`imseg.training.trainers`. Parts and settings: :mod:`imseg.parts`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from imseg.config import ModelConfig, NoiseSchedule
from imseg.evalnet import select as _select  # noqa: F401  (registers evalnet_select)
from imseg.models.names import TINY_UNET
from imseg.parts import Needs, Part, PartRegistry
from imseg.pseudo.copies import COPIES
from imseg.pseudo.labelers import LABELERS
from imseg.results import top_k
from imseg.training.trainers import TRAINERS

_SCHEDULE = NoiseSchedule()

TEACHERS = PartRegistry("teachers")
NOISE = PartRegistry("noise")
STUDENTS = PartRegistry("students")
STARTS = PartRegistry("start")

PART_KINDS: dict[str, PartRegistry] = {
    "teachers": TEACHERS, "labeler": LABELERS, "copies": COPIES, "noise": NOISE,
    "students": STUDENTS, "start": STARTS, "trainer": TRAINERS,
}
"""A recipe's fields, in order, each with the registry of its parts."""


# ---------------------------------------------------------------------------- teachers
class TeacherPart(Part):
    def choose(self, rows: list[dict], n: int | None) -> list[dict]:
        """The teachers among a stage's rows, by validation score."""
        raise NotImplementedError

    def draws(self, n: int) -> int:
        """How many models ``choose`` needs for teacher count ``n`` (0: it takes what there
        is), checked before a study starts."""
        return 0


@TEACHERS.register
class TopOne(TeacherPart):
    name: Literal["top_1"] = "top_1"

    def choose(self, rows: list[dict], n: int | None) -> list[dict]:
        return top_k(rows, 1)

    def draws(self, n: int) -> int:
        return 1


@TEACHERS.register
class TopN(TeacherPart):
    """The best n, for each teacher count n of ``ssl.teachers``."""

    name: Literal["top_n"] = "top_n"

    def choose(self, rows: list[dict], n: int | None) -> list[dict]:
        return top_k(rows, int(n or 1))

    def draws(self, n: int) -> int:
        return n

    def needs(self) -> Needs:
        return Needs(per_teacher_count=True)


@TEACHERS.register
class AllModels(TeacherPart):
    name: Literal["all"] = "all"

    def choose(self, rows: list[dict], n: int | None) -> list[dict]:
        return top_k(rows, len(rows))


# ------------------------------------------------------------------------------- noise
class NoisePart(Part):
    """How the copies of pseudo pairs are augmented."""

    def augment_changes(self, generation: int) -> dict[str, Any]:
        """Changes to the data set's augmentation for this generation's copies."""
        return {}


@NOISE.register
class NoNoise(NoisePart):
    """Copies use the data set's augmentation."""

    name: Literal["none"] = "none"


@NOISE.register
class NoisyStudent(NoisePart):
    """Copies use the Noisy Student schedule, generation g taking entry g (the last repeats)."""

    name: Literal["noisy_student"] = "noisy_student"
    max_blur: list[int] = Field(_SCHEDULE.max_blur, min_length=1)
    max_noise: list[int] = Field(_SCHEDULE.max_noise, min_length=1)
    alpha_ranges: list[tuple[float, float]] = Field(_SCHEDULE.alpha_ranges, min_length=1)
    beta_ranges: list[tuple[float, float]] = Field(_SCHEDULE.beta_ranges, min_length=1)
    GLOBALS: ClassVar[dict[str, str]] = {f: f"ssl.noise.{f}" for f in
                                         ("max_blur", "max_noise", "alpha_ranges", "beta_ranges")}

    def augment_changes(self, generation: int) -> dict[str, Any]:
        return {"max_blur": at(self.max_blur, generation),
                "max_noise": at(self.max_noise, generation),
                "alpha_range": tuple(at(self.alpha_ranges, generation)),
                "beta_range": tuple(at(self.beta_ranges, generation))}


def at(schedule: list, generation: int) -> Any:
    """A schedule's entry for a generation (1-based); the last entry repeats."""
    return schedule[min(generation - 1, len(schedule) - 1)]


# ---------------------------------------------------------------------------- students
class StudentsPart(Part):
    """How wide a generation's students are."""

    def alpha(self, model: ModelConfig, base: float, generation: int) -> float:
        """The tiny U-Net's width multiplier (``base``: ``train.alpha``)."""
        return base

    def encoder(self, model: ModelConfig, generation: int) -> str | None:
        """The encoder of an smp student; None: the model's own."""
        return None


@STUDENTS.register
class FixedStudents(StudentsPart):
    """Students as wide as the benchmark models."""

    name: Literal["fixed"] = "fixed"


@STUDENTS.register
class GrowingStudents(StudentsPart):
    """Wider students each generation (tiny U-Net: ``alphas``; encoder models:
    ``model.student_encoders``, the last repeating; none listed: the base encoder)."""

    name: Literal["growing"] = "growing"
    alphas: list[float] = Field(_SCHEDULE.student_alphas, min_length=1)
    GLOBALS: ClassVar[dict[str, str]] = {"alphas": "ssl.noise.student_alphas"}
    READS: ClassVar[tuple[str, ...]] = ("model.student_encoders",)

    def alpha(self, model: ModelConfig, base: float, generation: int) -> float:
        return float(at(self.alphas, generation)) if model.arch == TINY_UNET else base

    def encoder(self, model: ModelConfig, generation: int) -> str | None:
        encoders = model.student_encoders
        return at(encoders, generation) if encoders else None


# ------------------------------------------------------------------------------- start
class StartPart(Part):
    """Generation 0: the benchmark stage the chain starts from (its ``name``)."""

    AUGMENTED_LABELED: ClassVar[bool] = False
    """Students train on the labeled set plus its ALDT copies (else the labeled set)."""


@STARTS.register
class StartLDT(StartPart):
    """Generation 0 is the LDT stage (trained with the recipe's trainer)."""

    name: Literal["ldt"] = "ldt"


@STARTS.register
class StartALDT(StartPart):
    """Generation 0 is the ALDT stage; students train on the augmented labeled set."""

    name: Literal["aldt"] = "aldt"
    AUGMENTED_LABELED: ClassVar[bool] = True
