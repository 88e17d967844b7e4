"""NNQueue against a brute-force reference written here: a row-by-row FIFO and a float64 loop."""

from __future__ import annotations

import io

import pytest
import torch

from sclib.core.nnqueue import NNQueue

DIM = 8


def unit_rows(n: int, seed: int, dim: int = DIM) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g)
    return z / z.norm(dim=1, keepdim=True)


class SlowFifo:
    """A plain list that appends one row at a time and forgets the oldest: the reference queue contents."""

    def __init__(self, size: int):
        self.size = size
        self.rows: list[tuple[list[float], int]] = []

    def push(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        for row, index in zip(z.tolist(), indices.tolist(), strict=True):
            self.rows.append((row, index))
            self.rows = self.rows[-self.size:]

    def nearest(self, query: list[float], index: int) -> list[float]:
        """The row with the highest float64 dot product among rows of another sample."""
        best, best_sim = None, float("-inf")
        for row, row_index in self.rows:
            if row_index == index:
                continue
            sim = sum(a * b for a, b in zip(query, row, strict=True))
            if sim > best_sim:
                best, best_sim = row, sim
        assert best is not None
        return best


def expected_nearest(fifo: SlowFifo, z: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    rows = [fifo.nearest(q, i) for q, i in zip(z.double().tolist(), indices.tolist(), strict=True)]
    return torch.tensor(rows, dtype=torch.float32)


def stored_rows(queue: NNQueue) -> list[tuple[list[float], int]]:
    """The queue's entries oldest first, read from the ring buffer (the pointer is the oldest slot)."""
    count = queue.size if queue.full else queue.pointer
    start = queue.pointer if queue.full else 0
    order = [(start + k) % queue.size for k in range(count)]
    return [(queue.items[s].tolist(), int(queue.indices[s])) for s in order]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="size"):
        NNQueue(0, DIM)
    with pytest.raises(ValueError, match="dim"):
        NNQueue(4, 0)
    queue = NNQueue(4, DIM)
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        queue.push(torch.zeros(2, DIM + 1), torch.arange(2))
    with pytest.raises(ValueError, match="indices"):
        queue.nearest(torch.zeros(2, DIM), torch.arange(3))


def test_not_full_returns_input_until_the_filling_push():
    queue = NNQueue(10, DIM)
    for step, batch in enumerate([4, 3, 3]):  # 4, 7, then exactly 10: full only after the last push
        z = unit_rows(5, seed=step)
        out = queue.nearest(z, torch.arange(100, 105))
        assert torch.equal(out, z), f"swapped before the queue was full (after {queue.pointer} rows)"
        assert not queue.full
        queue.push(unit_rows(batch, seed=50 + step), torch.arange(batch) + 10 * step)
    assert queue.full
    z = unit_rows(5, seed=99)
    out = queue.nearest(z, torch.arange(100, 105))
    assert not torch.equal(out, z), "no swap once the queue was full"


def test_full_queue_matches_brute_force_nearest():
    size, fifo = 64, SlowFifo(64)
    queue = NNQueue(size, DIM)
    for step in range(3):  # 3 x 40 rows: wraps around once
        z, idx = unit_rows(40, seed=step), torch.arange(40) + 40 * step
        queue.push(z, idx)
        fifo.push(z, idx)
    z, idx = unit_rows(25, seed=7), torch.arange(1000, 1025)
    out = queue.nearest(z, idx)
    torch.testing.assert_close(out, expected_nearest(fifo, z, idx), rtol=0, atol=0)


def test_own_earlier_embedding_is_never_returned():
    queue, fifo = NNQueue(32, DIM), SlowFifo(32)
    z, idx = unit_rows(32, seed=3), torch.arange(32)
    queue.push(z, idx)
    fifo.push(z, idx)
    # the same samples again with identical vectors: each one's own entry is its closest (similarity 1)
    out = queue.nearest(z, idx)
    for row in range(32):
        assert not torch.equal(out[row], z[row]), f"sample {row} got its own earlier embedding back"
    torch.testing.assert_close(out, expected_nearest(fifo, z, idx), rtol=0, atol=0)


def test_every_copy_of_the_own_sample_is_excluded():
    queue = NNQueue(4, 2)
    own = torch.tensor([[1.0, 0.0]])
    queue.push(torch.cat([own, own, own, torch.tensor([[0.0, 1.0]])]), torch.tensor([5, 5, 5, 6]))
    # a top-2 rule would return the second copy of sample 5; only sample 6 is admissible
    out = queue.nearest(own, torch.tensor([5]))
    assert torch.equal(out, torch.tensor([[0.0, 1.0]]))


def test_row_without_admissible_entry_keeps_its_embedding():
    queue = NNQueue(2, 2)
    queue.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([5, 5]))
    z = torch.tensor([[0.6, 0.8], [0.8, 0.6]], requires_grad=True)
    out = queue.nearest(z, torch.tensor([5, 7]))  # sample 5 has only itself in the queue
    assert torch.equal(out, torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    assert not out.requires_grad


@pytest.mark.parametrize("batches", [[3, 4, 5, 6, 2], [5, 17, 3], [12], [25, 1]])
def test_ring_buffer_keeps_the_newest_rows(batches):
    size = 7
    queue, fifo = NNQueue(size, DIM), SlowFifo(size)
    seen = 0
    for step, batch in enumerate(batches):  # includes batches larger than the queue
        z, idx = unit_rows(batch, seed=step), torch.arange(seen, seen + batch)
        queue.push(z, idx)
        fifo.push(z, idx)
        seen += batch
        assert queue.full == (seen >= size)
        assert stored_rows(queue) == fifo.rows
    assert [i for _, i in fifo.rows] == list(range(seen - size, seen))


def test_low_precision_input_is_compared_in_float32():
    # true inner products with q = (1, -1): b wins (0.4015 > 0.4004), but rounded to bf16 a wins
    a, b = [0.9004, 0.5], [0.9040, 0.5025]
    q = torch.tensor([[1.0, -1.0]])
    assert (q.bfloat16() @ torch.tensor([a, b]).bfloat16().T).argmax().item() == 0  # the trap is real
    queue = NNQueue(2, 2)
    queue.push(torch.tensor([a, b]), torch.tensor([10, 11]))
    out = queue.nearest(q.bfloat16(), torch.tensor([0]))
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.tensor([b]).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = queue.nearest(q, torch.tensor([0]))
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([b]))


def test_result_carries_no_gradient():
    queue = NNQueue(16, DIM)
    queue.push(unit_rows(16, seed=1), torch.arange(16))
    z = unit_rows(4, seed=2).bfloat16().requires_grad_()
    out = queue.nearest(z, torch.arange(100, 104))
    assert not out.requires_grad
    assert out.dtype == torch.bfloat16
    queue.push(z, torch.arange(100, 104))  # pushing a tensor with grad stores a constant
    assert not queue.items.requires_grad


def test_state_dict_round_trip_through_weights_only_load():
    queue = NNQueue(20, DIM)
    for step in range(3):
        queue.push(unit_rows(9, seed=step), torch.arange(9) + 9 * step)
    buffer = io.BytesIO()
    torch.save(queue.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"items", "indices", "pointer", "full"}
    assert all(isinstance(v, torch.Tensor | int) for v in state.values())

    copy = NNQueue(20, DIM)
    copy.load_state_dict(state)
    for step in range(3, 6):  # identical results and contents on every later step
        z, idx = unit_rows(9, seed=step), torch.arange(9) + 9 * step
        assert torch.equal(queue.nearest(z, idx), copy.nearest(z, idx))
        queue.push(z, idx)
        copy.push(z, idx)
        assert stored_rows(queue) == stored_rows(copy)
    assert copy.pointer == queue.pointer and copy.full == queue.full

    fresh = NNQueue(20, DIM)  # a not-yet-full state stays not full after loading
    fresh.push(unit_rows(5, seed=0), torch.arange(5))
    restored = NNQueue(20, DIM)
    restored.load_state_dict(fresh.state_dict())
    assert not restored.full and restored.pointer == 5


def test_state_dict_is_a_copy():
    queue = NNQueue(4, DIM)
    state = queue.state_dict()
    queue.push(unit_rows(4, seed=0), torch.arange(4))
    assert torch.equal(state["items"], torch.zeros(4, DIM)) and state["full"] is False


@pytest.mark.parametrize(("size", "dim", "message"), [(30, DIM, "size 20"), (20, 16, "dim 8")])
def test_mismatched_state_is_refused(size, dim, message):
    other = NNQueue(size, dim)
    queue = NNQueue(20, DIM)
    with pytest.raises(ValueError, match=rf"\({size}, {dim}\) items but this queue is .*{message}"):
        queue.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="lacks"):
        queue.load_state_dict({"items": torch.zeros(20, DIM)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_nearest_does_not_synchronise_on_gpu():
    queue = NNQueue(64, DIM, device="cuda")
    queue.push(unit_rows(64, seed=0).cuda(), torch.arange(64, device="cuda"))
    z, idx = unit_rows(8, seed=1).cuda(), torch.arange(8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = queue.nearest(z, idx)
        queue.push(z, idx)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == z.device
