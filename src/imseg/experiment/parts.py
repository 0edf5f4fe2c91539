"""The recipe parts the generation loop implements itself: teachers, copies, noise,
students and start (labelers: :mod:`imseg.pseudo.labelers`; trainers:
:mod:`imseg.training.trainers`). Parts and settings: :mod:`imseg.parts`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from imseg.config import NoiseSchedule
from imseg.parts import Needs, Part, PartRegistry
from imseg.results import top_k

_SCHEDULE = NoiseSchedule()

TEACHERS = PartRegistry("teachers")
COPIES = PartRegistry("copies")
NOISE = PartRegistry("noise")
STUDENTS = PartRegistry("students")
STARTS = PartRegistry("start")


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


# ------------------------------------------------------------------------------ copies
class CopiesPart(Part):
    keep_originals: bool = Field(False, description="keep the un-augmented pair beside its "
                                 "copies")


@COPIES.register
class NoCopies(CopiesPart):
    """The pseudo pairs as they are."""

    name: Literal["none"] = "none"


@COPIES.register
class OneCopy(CopiesPart):
    """One augmented copy replaces each pair."""

    name: Literal["one"] = "one"


@COPIES.register
class CopiesByScore(CopiesPart):
    """1-5 copies per pair, rising with the EvalNet ensemble's predicted IoU."""

    name: Literal["evalnet"] = "evalnet"
    min_threshold: float | None = Field(None, description="1 copy at or below (None: on val)")
    max_threshold: float | None = Field(None, description="5 copies at or above (None: on val)")
    GLOBALS: ClassVar[dict[str, str]] = {"min_threshold": "evalnet.min_threshold",
                                         "max_threshold": "evalnet.max_threshold"}

    def needs(self) -> Needs:
        return Needs(evalnet_kinds=("im_plus_plus",))


# ------------------------------------------------------------------------------- noise
@NOISE.register
class NoNoise(Part):
    """Copies use the data set's augmentation."""

    name: Literal["none"] = "none"


@NOISE.register
class NoisyStudent(Part):
    """Copies use the Noisy Student schedule, generation g taking entry g (the last repeats)."""

    name: Literal["noisy_student"] = "noisy_student"
    max_blur: list[int] = Field(_SCHEDULE.max_blur, min_length=1)
    max_noise: list[int] = Field(_SCHEDULE.max_noise, min_length=1)
    alpha_ranges: list[tuple[float, float]] = Field(_SCHEDULE.alpha_ranges, min_length=1)
    beta_ranges: list[tuple[float, float]] = Field(_SCHEDULE.beta_ranges, min_length=1)
    GLOBALS: ClassVar[dict[str, str]] = {f: f"ssl.noise.{f}" for f in
                                         ("max_blur", "max_noise", "alpha_ranges", "beta_ranges")}


# ---------------------------------------------------------------------------- students
@STUDENTS.register
class FixedStudents(Part):
    """Students as wide as the benchmark models."""

    name: Literal["fixed"] = "fixed"


@STUDENTS.register
class GrowingStudents(Part):
    """Wider students each generation (tiny U-Net: ``alphas``; encoder models:
    ``model.student_encoders``)."""

    name: Literal["growing"] = "growing"
    alphas: list[float] = Field(_SCHEDULE.student_alphas, min_length=1)
    GLOBALS: ClassVar[dict[str, str]] = {"alphas": "ssl.noise.student_alphas"}


# ------------------------------------------------------------------------------- start
@STARTS.register
class StartLDT(Part):
    """Generation 0 is the LDT stage (trained with the recipe's trainer)."""

    name: Literal["ldt"] = "ldt"


@STARTS.register
class StartALDT(Part):
    """Generation 0 is the ALDT stage; students train on the augmented labeled set."""

    name: Literal["aldt"] = "aldt"
