"""Where a privacy mechanism's randomness comes from: a secret drawn at the node that applies it.

Every mechanism (DP-SGD's noise and Poisson sampling, label flips, embedding noise, noisy
summaries, central DP's noise) draws from a :class:`NoiseSource`: a 256-bit key drawn from the
operating system's cryptographic source (:func:`os.urandom`) at the node, kept in that node's
own state, and never derived from the config ``seed`` or anything else public. Each use derives
its generator from the key and a purpose (HMAC-SHA256), so what a mechanism promises to draw
once (the label flips, a release's noisy embeddings) is the same every time the node needs it,
while anyone without the key (the other parties, the server, a reader of ``results.json``)
cannot regenerate it.

``NoiseSource.reproducible(seed, party)`` derives the key from public values instead. It exists
for tests and research only (``privacy.reproducible_noise=true``): every output then says that
its epsilon is no guarantee.

What remains (see docs/privacy.md): torch's and numpy's generators are not cryptographic
(Opacus' ``secure_mode`` needs torchcsprng, which the package index lacks); each generator is
seeded with 64 (torch) or 128 (numpy) bits derived from the secret key, and Gaussian noise is
drawn as Opacus' ``secure_mode`` draws it (the sum of four samples, halved) against the
floating-point attacks on Gaussian samplers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

import numpy as np
import torch

NOISE_GUARANTEED = "os"
NOISE_REPRODUCIBLE = "reproducible"
NO_GUARANTEE = ("privacy.reproducible_noise=true: every mechanism's noise is derived from the "
                "public seed, so anyone can regenerate it; the epsilon figures are NO guarantee")


@dataclass(frozen=True)
class NoiseSource:
    """A node's secret key and the generators derived from it.

    >>> a, b = NoiseSource.fresh(), NoiseSource.fresh()
    >>> a.key != b.key and a.guaranteed
    True
    >>> r = NoiseSource.reproducible(0, "lender")
    >>> r.key == NoiseSource.reproducible(0, "lender").key, r.guaranteed
    (True, False)
    >>> g1, g2 = a.torch("flips"), a.torch("flips")
    >>> bool(torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2)))
    True
    """

    key: bytes = field(repr=False)
    guaranteed: bool = True

    @classmethod
    def fresh(cls) -> NoiseSource:
        """Draw a new key from the operating system's cryptographic source."""
        return cls(os.urandom(32), True)

    @classmethod
    def reproducible(cls, seed: int, party: str) -> NoiseSource:
        """Derive the key from public values (tests and research only: no guarantee)."""
        return cls(hashlib.sha256(f"reproducible-noise:{seed}:{party}".encode()).digest(), False)

    @property
    def kind(self) -> str:
        """``os`` or ``reproducible``, as the ledger and results.json record it."""
        return NOISE_GUARANTEED if self.guaranteed else NOISE_REPRODUCIBLE

    def for_run(self, run: object) -> NoiseSource:
        """Return the key of one run: the node's key, keyed again by the run's id.

        Flower may carry a node's state from one run to the next; the same noise must never be
        drawn twice for different data, so every run has a key of its own.
        """
        return NoiseSource(self.digest("run", run), self.guaranteed)

    def fresh_torch(self, *purpose: object) -> torch.Generator:
        """Return a torch generator drawn anew from the OS at every call (DP-SGD's steps).

        A step that is run again (a repeated message) then gets independent noise, never the
        same noise on other inputs, which would cancel in a difference. With reproducible noise
        it is :meth:`torch` (derived from the public seed).
        """
        if not self.guaranteed:
            return self.torch(*purpose)
        return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "big"))

    def commitment(self, data: bytes) -> str:
        """Return HMAC-SHA256 of ``data`` under the key.

        Comparable across messages, and useless to whoever lacks the key (a brute force over
        candidate values needs it).
        """
        return hmac.new(self.key, data, hashlib.sha256).hexdigest()

    def digest(self, *purpose: object) -> bytes:
        """HMAC-SHA256 of the purpose under the key: 32 secret bytes per purpose."""
        message = ":".join(map(str, purpose)).encode()
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def torch(self, *purpose: object) -> torch.Generator:
        """Return a torch generator for one purpose (seeded with 64 secret bits)."""
        return torch.Generator().manual_seed(int.from_bytes(self.digest(*purpose)[:8], "big"))

    def numpy(self, *purpose: object) -> np.random.Generator:
        """Return a numpy generator for one purpose (PCG64 seeded with 128 secret bits)."""
        return np.random.default_rng(int.from_bytes(self.digest(*purpose)[:16], "big"))

    def seed_numpy_global(self, *purpose: object) -> None:
        """Seed numpy's global generator (MT19937's whole state) for one purpose.

        Flower's central-DP wrapper draws its noise from ``np.random.normal``; the server seeds
        that generator from its secret right before each aggregation.
        """
        words = b"".join(self.digest(*purpose, i) for i in range(78))  # 624 32-bit words
        np.random.seed(np.frombuffer(words, dtype=np.uint32))


def gaussian(shape: tuple[int, ...], std: float, generator: np.random.Generator) -> np.ndarray:
    """Gaussian noise drawn as Opacus' ``secure_mode`` draws it: four samples, summed, halved.

    The sum of four N(0, std^2) halved is N(0, std^2); the mix hides the floating-point
    structure of one sampler's output (Opacus, after Holohan and Braghin 2021).

    >>> x = gaussian((200_000,), 2.0, np.random.default_rng(0))
    >>> bool(abs(x.std() - 2.0) < 0.02)
    True
    """
    if std == 0:
        return np.zeros(shape)
    draws = [generator.normal(0.0, std, shape) for _ in range(4)]
    return np.asarray((draws[0] + draws[1] + draws[2] + draws[3]) / 2.0)
