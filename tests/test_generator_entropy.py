"""Issue 30, finding 7: every generator a privacy mechanism draws from carries its full key.

``torch.manual_seed`` (and ``torch.Generator().manual_seed``) fills MT19937's 624-word state
from the low 32 bits of the seed alone (``init_genrand``): a DP-SGD generator seeded with 64
secret bits gave the same noise as one seeded with their low 32 bits, a search of 2**32. The
attack below rebuilds the noise from those 32 bits; it worked on the old construction and fails
on the new one, where the whole state is expanded from 256 bits (the node's key, or the OS).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_client.vertical_task import PassiveNode
from models.local_training import DPRound, poisson_sample_rate, train_round
from models.networks import MLP
from privacy import randomness
from privacy.randomness import NoiseSource, numpy_generator, seed_torch_global, torch_generator
from privacy.settings import PrivacyMechanism, PrivacySettings

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
WORDS = 624


def _old(material: bytes) -> torch.Generator:
    """How every DP generator was built before: ``manual_seed`` with 64 secret bits."""
    return torch.Generator().manual_seed(int.from_bytes(material[:8], "big"))


def _low_32(material: bytes) -> torch.Generator:
    """The attacker's rebuild: ``manual_seed`` with the low 32 bits of the seed alone."""
    return torch.Generator().manual_seed(int.from_bytes(material[4:8], "big"))


def _draws(generator: torch.Generator) -> torch.Tensor:
    return torch.randn(64, generator=generator)


def _mt_words(state: torch.Tensor) -> np.ndarray:
    """The 624 MT19937 words of a torch CPU generator's state (each kept in a uint64)."""
    return np.frombuffer(bytes(state.numpy()), "<u8", count=WORDS, offset=24)


def _from_a_32_bit_seed(words: np.ndarray) -> bool:
    """Whether ``words`` are MT19937's ``init_genrand`` state: all fixed by ``words[0]``."""
    w = [int(x) for x in words]
    return all(w[i] == (1812433253 * (w[i - 1] ^ (w[i - 1] >> 30)) + i) % 2**32
               for i in range(1, WORDS))


# --- the claim, measured ---------------------------------------------------------------------

def test_manual_seed_keeps_only_the_low_32_bits_of_a_64_bit_seed():
    # two 64-bit seeds that share their low 32 bits, and the low 32 bits alone
    seeds = [(0xDEADBEEF << 32) | 0x12345678, (0xCAFEBABE << 32) | 0x12345678, 0x12345678]
    draws = [_draws(torch.Generator().manual_seed(s)) for s in seeds]
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    # the state is init_genrand's of the low word: 32 bits decide all 19,968
    state = torch.Generator().manual_seed(seeds[0]).get_state()
    assert _from_a_32_bit_seed(_mt_words(state)) and int(_mt_words(state)[0]) == 0x12345678


def test_the_words_are_where_the_generator_reads_them():
    # torch_generator's layout: the 624 words of init_genrand(s), written through set_state,
    # draw as manual_seed(s) does (so the words written are the words drawn from)
    s = 0x9E3779B9
    words = [s]
    for i in range(1, WORDS):
        words.append((1812433253 * (words[-1] ^ (words[-1] >> 30)) + i) % 2**32)
    built = randomness._generator_with_words(np.array(words, dtype=np.uint32))
    assert torch.equal(_draws(built), _draws(torch.Generator().manual_seed(s)))


# --- the attack ------------------------------------------------------------------------------

def _dp_round(secret: tuple[torch.Generator, torch.Generator], n: int = 600) -> torch.Tensor:
    """One DP-SGD round through Opacus (Poisson sampling and noise from ``secret``)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 6)).astype(np.float32), (rng.random(n) < 0.3).astype(np.float32)
    torch.manual_seed(0)
    model = MLP(6, (8,), 0.0)
    train_round(model, x, y, epochs=1, batch_size=64, lr=0.05, weight_decay=0.0, seed=7,
                dp=DPRound(1.0, 1.0, poisson_sample_rate(n, 64), 1e-5), secret=secret)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_the_low_32_bits_rebuilt_the_old_dpsgd_round_exactly():
    """The attack as the issue describes it, against the old construction: it succeeds."""
    key = NoiseSource.fresh()
    sampling, noise = key.digest("sampling", 1), key.digest("dpsgd", 1)
    node = _dp_round((_old(sampling), _old(noise)))
    attacker = _dp_round((_low_32(sampling), _low_32(noise)))
    assert torch.equal(node, attacker)


def test_the_low_32_bits_no_longer_rebuild_a_dpsgd_round():
    # Prepare: the node's round with its secret generators, as the nodes build them now
    key = NoiseSource.fresh()
    node = _dp_round((key.torch("sampling", 1), key.torch("dpsgd", 1)))
    # Execute: the attacker replays it from 32 bits of each generator's key material
    guesses = {
        "low 32 bits of the old seed": (_low_32(key.digest("sampling", 1)),
                                        _low_32(key.digest("dpsgd", 1))),
        "the whole old 64-bit seed": (_old(key.digest("sampling", 1)),
                                      _old(key.digest("dpsgd", 1))),
        "the key's last 32 bits": (
            torch.Generator().manual_seed(int.from_bytes(key.digest("sampling", 1)[-4:], "big")),
            torch.Generator().manual_seed(int.from_bytes(key.digest("dpsgd", 1)[-4:], "big"))),
    }
    # Assert: no replay comes near the node's model (the noise std per step is 1/64 of a
    # clipped gradient's norm; equal noise gave equal weights above)
    for name, generators in guesses.items():
        gap = float((node - _dp_round(generators)).abs().max())
        print(f"{name}: largest weight gap {gap:.4f}")
        assert gap > 1e-3, name


def test_a_step_drawn_from_the_os_is_not_rebuilt_from_the_os_bytes_low_32_bits(monkeypatch):
    # Prepare: record what fresh_torch reads from the OS
    key = NoiseSource.fresh()
    read: list[bytes] = []
    real = randomness.os.urandom

    def recording(n: int) -> bytes:
        read.append(real(n))
        return read[-1]

    monkeypatch.setattr(randomness.os, "urandom", recording)
    generator = key.fresh_torch("dpsgd", 1)
    # Assert: 256 bits read, and the whole state is their expansion
    assert [len(b) for b in read] == [32]
    expected = np.frombuffer(hashlib.shake_256(b"mt19937:" + read[0]).digest(4 * WORDS), "<u4")
    assert np.array_equal(_mt_words(generator.get_state()), expected)
    # Execute: even knowing every byte the OS gave, the old derivation draws other noise
    assert not torch.equal(_draws(generator), _draws(_low_32(read[0])))


# --- every DP generator's state --------------------------------------------------------------

def _node_generators() -> list[torch.Generator]:
    """The generators a vertical node's DP-SGD chunk draws from (sampling, noise)."""
    from credit_data.split import TRAIN
    from credit_data.vertical import NodeRows
    from federation.settings import FederationSettings, Mode
    from fl_client.settings import ClientSettings
    from models.settings import ModelSettings, TrainSettings

    settings = ClientSettings(
        party="bureau", seed=0,
        model=ModelSettings(hidden=(8,), encoder_hidden=(8,), embedding_dim=4, dropout=0.0),
        train=TrainSettings(epochs=2, batch_size=64),
        federation=FederationSettings(mode=Mode.vertical, exchanges_per_epoch=2),
        privacy=PrivacySettings(mechanism=PrivacyMechanism.dpsgd))
    rows = NodeRows("bureau", ["a", "b"], np.zeros((2, 3), np.float32), np.full(2, TRAIN),
                    ("x0", "x1", "x2"), None)
    node = PassiveNode(settings, rows, NoiseSource.fresh())
    sampling, noise = node._generators(1, 0)
    assert noise is not None
    return [sampling, noise]


@pytest.mark.parametrize("source", ["secret key", "os", "vertical node", "reproducible"])
def test_no_dp_generator_state_comes_from_a_32_bit_seed(source):
    key = NoiseSource.fresh()
    generators = {
        "secret key": lambda: [key.torch("sampling", 1), key.torch("dpsgd", 1)],
        "os": lambda: [key.fresh_torch("sampling", 1), key.fresh_torch("dpsgd", 1)],
        "vertical node": _node_generators,
        "reproducible": lambda: [NoiseSource.reproducible(0, "lender").fresh_torch("dpsgd", 1)],
    }[source]()
    for generator in generators:
        words = _mt_words(generator.get_state())
        assert not _from_a_32_bit_seed(words)
        assert len(np.unique(words)) > 600  # 624 words of a 256-bit expansion, not a pattern
    assert len({bytes(g.get_state().numpy()) for g in generators}) == len(generators)


def test_dropout_under_dp_draws_from_a_full_state_of_its_own():
    # Prepare: two keys that differ only in their top byte
    a, b = bytes(32), bytes([0x80]) + bytes(31)
    seed_torch_global(torch_generator(a))
    words = _mt_words(torch.get_rng_state())
    mask_a = torch.rand(64)
    seed_torch_global(torch_generator(b))
    mask_b = torch.rand(64)
    # Assert: not an init_genrand state (the old seed was the generator's ^ 0x5EED), different
    # keys give different dropout, and the global stream is not the generator's own
    assert not _from_a_32_bit_seed(words)
    assert not torch.equal(mask_a, mask_b)
    assert not torch.equal(mask_a, torch.rand(64, generator=torch_generator(a)))
    seed_torch_global(torch_generator(a))
    assert torch.equal(torch.rand(64), mask_a)  # a function of the secret: reproducible noise


@pytest.mark.parametrize("bit", [40, 70, 130, 255])
def test_keys_differing_only_above_bit_32_draw_differently(bit):
    base = hashlib.sha256(b"a key").digest()
    other = (int.from_bytes(base, "big") ^ (1 << bit)).to_bytes(32, "big")
    assert base[-4:] == other[-4:]
    assert not torch.equal(_draws(torch_generator(base)), _draws(torch_generator(other)))
    assert numpy_generator(base).random() != numpy_generator(other).random()


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match="64 bits.*at least 128"):
        torch_generator(bytes(8))
    with pytest.raises(ValueError, match="numpy_generator"):
        numpy_generator(bytes(4))


def test_the_central_dp_global_state_is_not_a_32_bit_seeds():
    NoiseSource.fresh().seed_numpy_global("central", 1)
    words = np.random.get_state()[1]
    assert not _from_a_32_bit_seed(words)


# --- the source: no generator seeded from secret material ------------------------------------

PACKAGES = ("privacy", "models", "fl_client", "fl_server", "federation", "deployment",
            "credit_fl")
SEEDING = {"manual_seed", "seed", "default_rng", "RandomState"}
SECRET = {"urandom", "digest", "token_bytes", "randbits", "getrandbits", "key", "noise",
          "secret", "sampling", "initial_seed"}
# the one public seed read back from a generator: the plain (non-DP) chunk's, from the seed
PUBLIC_READBACK = {("models/split_training.py", "torch.manual_seed(generator.initial_seed())")}


def _names(call: ast.Call) -> set[str]:
    """Every name and attribute in a call's arguments."""
    return {n.attr if isinstance(n, ast.Attribute) else n.id
            for arg in [*call.args, *(k.value for k in call.keywords)]
            for n in ast.walk(arg) if isinstance(n, ast.Attribute | ast.Name)}


def _seeding_calls() -> list[tuple[str, str, set[str]]]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name not in SEEDING:
                    continue
                found.append((str(path.relative_to(REPO)), ast.unparse(node), _names(node)))
    return found


def test_no_generator_is_seeded_from_secret_material():
    calls = _seeding_calls()
    assert any(call == "torch.manual_seed(s.seed)" for _, call, _ in calls)  # the scan finds
    leaks = [f"{path}: {call}" for path, call, names in calls
             if names & SECRET and (path, call) not in PUBLIC_READBACK]
    assert not leaks, "seeded from secret material (keeps 32 bits of it):\n" + "\n".join(leaks)


def test_the_scan_would_have_found_the_old_code():
    old = ["torch.Generator().manual_seed(int.from_bytes(os.urandom(8), 'big'))",
           "torch.Generator().manual_seed(int.from_bytes(self.digest(*purpose)[:8], 'big'))",
           "torch.manual_seed(sampling.initial_seed() ^ 24301)",
           "torch.manual_seed(generator.initial_seed() if dp is None else "
           "generator.initial_seed() ^ 24301)"]
    for source in old:
        call = ast.parse(source).body[0].value  # type: ignore[attr-defined]
        assert _names(call) & SECRET
        assert ("models/split_training.py", ast.unparse(call)) not in PUBLIC_READBACK
