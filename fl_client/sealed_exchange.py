"""Each node's end of the sealed exchanges: which key, what kind, which counter. No flwr.

The coordinator routes every embedding and gradient of a vertical run as bytes it cannot open
(:mod:`federation.sealed`). The exchange key with each peer is derived from the alignment's
channel key when the alignment runs, and kept in the node's own state (``node_state.pt``,
owner-only, on the node's disk), beside the channel key it comes from. A receiver opens with
the counter it expects itself:

* the lender opens a chunk's embeddings at the exchange the server announces, and the
  lender's own replay guard (:func:`fl_client.node_store.at_epoch_start`) refuses an exchange
  at or before its last one;
* a party opens gradients only as those of its own last exchange (``state.last``).

The lender keeps the gradients of each epoch's last exchange (its own values, on its own disk):
a resumed run asks it to seal them again (``query.resend``), so that the server's
``checkpoint.pt`` holds nothing per record.
"""

from __future__ import annotations

import numpy as np

from credit_data.errors import AlignmentError
from credit_data.settings import LABEL_HOLDER
from federation.sealed import SealedChannel
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState

GRADIENTS = "gradients"
SCORING = "scoring embeddings"


def run_name(settings: ClientSettings) -> str:
    """Return the run every sealed array is bound to (a deployed run's name; empty in simulation).

    In simulation the channel keys are drawn afresh for every alignment, so no array of one run
    opens in another either.
    """
    return settings.channel_keys.run if settings.channel_keys is not None else ""


def channel(settings: ClientSettings, keys: dict[str, bytes], peer: str) -> SealedChannel:
    """Return this node's sealed channel with ``peer``."""
    return SealedChannel.of(keys, run_name(settings), settings.party, peer)


def embeddings_kind(split: str) -> str:
    """Return what a party's embeddings of one split are sealed as in training's exchanges."""
    return f"{split} embeddings"


def final_kind(split: str) -> str:
    """Return what a party's embeddings of one split are sealed as for the final model."""
    return f"final {split} embeddings"


# --- a passive party ----------------------------------------------------------------------------

def seal_for_lender(settings: ClientSettings, state: NodeState, kinds: dict[str, str],
                    counter: tuple[int, ...], values: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Seal each named array for the lender, as ``kinds[name]`` at ``counter``."""
    to_lender = channel(settings, state.keys, LABEL_HOLDER)
    return {name: to_lender.seal(kinds[name], counter, value) for name, value in values.items()}


def open_gradients(settings: ClientSettings, state: NodeState, sealed: np.ndarray | None,
                   prev: tuple[int, int] | None) -> np.ndarray | None:
    """Open the lender's gradients, as those of this node's own last exchange.

    ``prev`` is the exchange the server says they belong to: one this node did not make last
    is refused before anything opens.
    """
    if sealed is None:
        return None
    last = tuple(state.last)
    if prev is None or prev != last:
        raise AlignmentError(f"{settings.party}: gradients for exchange {prev}, but this node's "
                             f"last exchange is {last or 'none'}; refused")
    return channel(settings, state.keys, LABEL_HOLDER).open(GRADIENTS, last, sealed)


# --- the lender ---------------------------------------------------------------------------------

def open_from_parties(settings: ClientSettings, state: NodeState, kind: str,
                      counter: tuple[int, ...], sealed: dict[str, np.ndarray]
                      ) -> dict[str, np.ndarray]:
    """Open each party's sealed array (``sealed`` maps a party to its blob)."""
    return {party: channel(settings, state.keys, party).open(kind, counter, blob)
            for party, blob in sealed.items()}


def seal_gradients(settings: ClientSettings, state: NodeState, epoch: int, chunk: int,
                   grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Seal each party's gradients of exchange (epoch, chunk); keep an epoch's last ones.

    The kept gradients are the lender's own values, on its own disk: a resumed run asks for
    them again (:func:`resend_gradients`) instead of the server keeping them.
    """
    if grads and chunk == settings.federation.exchanges_per_epoch - 1:  # not a stop
        state.resend = {p: np.asarray(g) for p, g in grads.items()}
        state.resend_at = [epoch, chunk]
    return {f"{p}.grads": channel(settings, state.keys, p).seal(GRADIENTS, (epoch, chunk), g)
            for p, g in grads.items()}


def resend_gradients(settings: ClientSettings, states: list[NodeState], epoch: int, chunk: int,
                     passive: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Seal again the gradients of exchange (epoch, chunk), from the first state that kept them.

    ``states``: the node's state, then its copy of the last epoch's start (a run that failed
    after the lender finished an epoch the server never checkpointed).
    """
    for state in states:
        if state.resend_at == [epoch, chunk] and set(passive) <= set(state.resend):
            return seal_gradients(settings, state, epoch, chunk,
                                  {p: state.resend[p] for p in passive})
    raise AlignmentError(f"{settings.party}: this node kept no gradients of exchange "
                         f"({epoch}, {chunk}) for {list(passive)}; the run cannot resume there")
