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

Every generator carries the key's full 256 bits. ``torch.manual_seed`` would keep only the low 32
bits of any seed in MT19937's state (``init_genrand`` takes a 32-bit word), so a torch generator
is never seeded: :func:`torch_generator` writes the whole MT19937 state (624 words) from SHAKE-256
of a 256-bit key; numpy's PCG64 (256 bits of state and increment) takes the 256-bit key through a
``SeedSequence`` pool of 256 bits.

What remains (see docs/privacy.md): torch's and numpy's generators are not cryptographic
(Opacus' ``secure_mode`` needs torchcsprng, which the package index lacks), and Gaussian noise
is drawn as Opacus' ``secure_mode`` draws it (the sum of four samples, halved) against the
floating-point attacks on Gaussian samplers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

NOISE_GUARANTEED = "os"
NOISE_REPRODUCIBLE = "reproducible"
NO_GUARANTEE = ("privacy.reproducible_noise=true: every mechanism's noise is derived from the "
                "public seed, so anyone can regenerate it; the epsilon figures are NO guarantee")
KEY_BYTES = 32  # a generator's key: 256 bits
MIN_KEY_BYTES = 16  # below 128 bits a key is refused
MT_WORDS = 624  # MT19937's state: 624 32-bit words
# torch's CPU generator state (CPUGeneratorImplState, torch 2.x): the initial seed (uint64), the
# words left before the next twist (int), seeded (int), the next word's index (uint64), the 624
# words (each in a uint64), the cached normal samples; 5,056 bytes in all
_HEAD = struct.Struct("<QiiQ")
_WORDS_AT = _HEAD.size
_STATE_BYTES = 5056


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
        return torch_generator(os.urandom(KEY_BYTES))

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
        """Return a torch generator for one purpose (its whole state from 256 secret bits)."""
        return torch_generator(self.digest(*purpose))

    def numpy(self, *purpose: object) -> np.random.Generator:
        """Return a numpy generator for one purpose (PCG64 from 256 secret bits)."""
        return numpy_generator(self.digest(*purpose))

    def seed_numpy_global(self, *purpose: object) -> None:
        """Seed numpy's global generator (MT19937's whole state) for one purpose.

        Flower's central-DP wrapper draws its noise from ``np.random.normal``; the server seeds
        that generator from its secret right before each aggregation.
        """
        words = b"".join(self.digest(*purpose, i) for i in range(78))  # 624 32-bit words
        np.random.seed(np.frombuffer(words, dtype=np.uint32))


def torch_generator(key: bytes) -> torch.Generator:
    """Return a torch CPU generator whose whole MT19937 state is expanded from ``key``.

    ``torch.Generator().manual_seed(s)`` fills MT19937's 624 words from the low 32 bits of ``s``
    alone, so any seed gives one of 2**32 streams. Here the 624 words are SHAKE-256 of ``key``
    (at least 128 bits; the callers pass 256), written with ``set_state``; the first draw twists
    them, as after ``manual_seed``. ``initial_seed()`` of such a generator is 0 and means nothing:
    never seed anything from it.

    >>> a, b = torch_generator(bytes(32)), torch_generator(bytes(32))
    >>> bool(torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b)))
    True
    >>> c = torch_generator(bytes([1]) + bytes(31))  # differs only in the key's top byte
    >>> bool(torch.equal(torch.randn(3, generator=c), torch.randn(3, generator=a)))
    False
    """
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"torch_generator: a key of {len(key) * 8} bits; a generator needs at "
                         f"least {MIN_KEY_BYTES * 8}")
    words = np.frombuffer(hashlib.shake_256(b"mt19937:" + key).digest(4 * MT_WORDS), "<u4")
    return _generator_with_words(words)


def _generator_with_words(words: np.ndarray) -> torch.Generator:
    """Return a torch CPU generator whose MT19937 words are ``words``, about to twist them."""
    generator = torch.Generator()
    if generator.get_state().numel() != _STATE_BYTES:
        raise RuntimeError(f"torch {torch.__version__}: the CPU generator's state is "
                           f"{generator.get_state().numel()} bytes, not the {_STATE_BYTES} "
                           "privacy/randomness.py writes; check its layout before drawing noise")
    state = bytearray(_STATE_BYTES)
    _HEAD.pack_into(state, 0, 0, 1, 1, 0)  # seed 0 (meaningless), 1 left: twist first, seeded
    state[_WORDS_AT:_WORDS_AT + 8 * MT_WORDS] = words.astype("<u8").tobytes()
    generator.set_state(torch.frombuffer(state, dtype=torch.uint8))
    return generator


def numpy_generator(key: bytes) -> np.random.Generator:
    """Return a numpy PCG64 generator keyed by all of ``key`` (a 256-bit entropy pool).

    ``default_rng`` pools its seed into 128 bits; PCG64's state and increment hold 255.

    >>> a, b = numpy_generator(bytes(32)), numpy_generator(bytes([1]) + bytes(31))
    >>> bool(a.random() == numpy_generator(bytes(32)).random()), bool(a.random() == b.random())
    (True, False)
    """
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"numpy_generator: a key of {len(key) * 8} bits; a generator needs at "
                         f"least {MIN_KEY_BYTES * 8}")
    pool = np.random.SeedSequence(int.from_bytes(key, "big"), pool_size=8)
    return np.random.Generator(np.random.PCG64(pool))


def seed_torch_global(generator: torch.Generator) -> None:
    """Set torch's global generator (dropout draws from it) from a secret generator's state.

    The global state's 624 words are expanded (one-way, SHAKE-256) from ``generator``'s whole
    state, so dropout under DP is as secret as ``generator`` and does not repeat its stream.
    """
    state = bytes(generator.get_state().numpy())
    torch.set_rng_state(torch_generator(b"global:" + state).get_state())


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
