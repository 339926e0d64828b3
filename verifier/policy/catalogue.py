"""The GPU model catalogue of a policy pack and the pure classifier over it (docs/design.md §13).

A GPU is classified from the PCI ids it attests, never from the name string its agent reports:
a name is free text that a host can make say anything, while a device id that is not in the
catalogue is at least visible as unknown. An unknown id is not ignored: it is counted at the
highest TPP of the catalogue, so an unrecognised board can never make holdings look smaller.

All arithmetic is exact: TPP is an integer, densities and thresholds are `Fraction`s.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Final

#: NVIDIA's PCI vendor id: the low 16 bits of NVML's pci_device_id, (device << 16) | vendor.
NVIDIA_VENDOR: Final = 0x10DE


class SourceLabel(enum.Enum):
    """How a figure was read (the labels of the sources the packs cite)."""

    PRIMARY = "primary"  # the official text (eCFR, Federal Register, bis.gov) was read
    CAPTURE = "capture"  # read off real hardware
    SECONDARY = "secondary"  # a law firm's, the press's or a think tank's summary
    RECALLED = "recalled"  # remembered (a datasheet, the rule), not re-read


@dataclass(frozen=True)
class Source:
    """Where a figure comes from: a public URL or a Federal Register / CFR citation."""

    ref: str
    label: SourceLabel
    note: str = ""

    @property
    def verified(self) -> bool:
        return self.label in (SourceLabel.PRIMARY, SourceLabel.CAPTURE)


class Eccn(enum.Enum):
    """The 3A090 classification of an IC."""

    A = "3A090.a"
    B = "3A090.b"
    NONE = "none"  # below both 3A090 paragraphs


@dataclass(frozen=True)
class Thresholds:
    """The 3A090 parameters: .a is TPP >= a_tpp, or TPP >= a_density_tpp and PD >= a_density;
    .b is b_tpp <= TPP < a_tpp and b_density <= PD < a_density, or TPP >= b_alt_tpp and
    b_alt_density <= PD < a_density."""

    a_tpp: int
    a_density_tpp: int
    a_density: Fraction
    b_tpp: int
    b_density: Fraction
    b_alt_tpp: int
    b_alt_density: Fraction
    source: Source

    def classify(self, tpp: int, density: Fraction | None) -> Eccn | None:
        """The classification the thresholds give; None when it needs the density and the die
        area is not published."""
        if tpp >= self.a_tpp:
            return Eccn.A
        if density is None:
            return None
        if tpp >= self.a_density_tpp and density >= self.a_density:
            return Eccn.A
        below_a = density < self.a_density
        if self.b_tpp <= tpp < self.a_tpp and self.b_density <= density and below_a:
            return Eccn.B
        if tpp >= self.b_alt_tpp and self.b_alt_density <= density and below_a:
            return Eccn.B
        return Eccn.NONE


@dataclass(frozen=True)
class CatalogueEntry:
    """One GPU model: its PCI ids, dense TPP and how it was derived, die area, 3A090 class and
    typical board power. `pci_device_id` None: no id is known, so nothing matches the entry
    (it still counts towards the catalogue's highest TPP)."""

    model: str
    name: str
    pci_device_id: int | None
    #: Empty: every subsystem of the device id; else only these.
    pci_subsystem_ids: tuple[int, ...]
    dense_tops: Fraction
    bit_length: int
    dense_tpp: int
    die_area_mm2: Fraction | None
    eccn: Eccn
    board_power_w: int
    ids_source: Source
    source: Source

    @property
    def performance_density(self) -> Fraction | None:
        """TPP / die area (mm2), exactly; None where the die area is not published."""
        return None if self.die_area_mm2 is None else self.dense_tpp / self.die_area_mm2

    @property
    def verified(self) -> bool:
        return self.source.verified and self.ids_source.verified


@dataclass(frozen=True)
class UnknownModel:
    """A GPU whose PCI ids no catalogue entry matches (or were not readable): reported as
    `unknown-gpu-model` and counted at `assumed_tpp`, the catalogue's highest TPP."""

    pci_device_id: int | None
    pci_subsystem_id: int | None
    assumed_tpp: int


@dataclass(frozen=True)
class Catalogue:
    """The entries of a pack and their index by PCI device id (built once, at load)."""

    entries: tuple[CatalogueEntry, ...]
    max_tpp: int = field(init=False)
    _index: Mapping[int, tuple[CatalogueEntry, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[int, list[CatalogueEntry]] = {}
        for entry in self.entries:
            if entry.pci_device_id is not None:
                index.setdefault(entry.pci_device_id, []).append(entry)
        frozen = MappingProxyType({k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "_index", frozen)
        object.__setattr__(self, "max_tpp", max((e.dense_tpp for e in self.entries), default=0))

    def by_model(self, model: str) -> CatalogueEntry | None:
        return next((e for e in self.entries if e.model == model), None)

    def candidates(self, pci_device_id: int) -> tuple[CatalogueEntry, ...]:
        return self._index.get(pci_device_id, ())


def classify(
    pci_device_id: int | None, pci_subsystem_id: int | None, catalogue: Catalogue
) -> CatalogueEntry | UnknownModel:
    """The catalogue entry of a GPU from its attested PCI ids (NVML's `pci_device_id` and
    `pci_subsystem_id`, vendor in the low 16 bits). An entry listing the subsystem id wins over
    one for the whole device id; no match, or ids the agent could not read (None), gives an
    `UnknownModel` counted at the catalogue's highest TPP."""
    if pci_device_id is not None:
        whole_device = None
        for entry in catalogue.candidates(pci_device_id):
            if not entry.pci_subsystem_ids:
                whole_device = entry
            elif pci_subsystem_id in entry.pci_subsystem_ids:
                return entry
        if whole_device is not None:
            return whole_device
    return UnknownModel(pci_device_id, pci_subsystem_id, catalogue.max_tpp)
