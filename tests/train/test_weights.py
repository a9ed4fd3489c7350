"""Weights files: safetensors written one tensor at a time, read back by the safetensors library itself;
legacy `.pt` files still read; damaged files named."""

import pytest
import torch
from safetensors.torch import load_file

from distrec.errors import DataError
from distrec.train.weights import find_weights, read_weights, require_weights, write_state_dict, write_streaming


def test_a_streamed_file_is_what_safetensors_reads(tmp_path):
    state = {"emb.weight": torch.randn(7, 3), "codes": torch.arange(12).view(4, 3), "scale": torch.tensor(2.5),
             "empty": torch.zeros(0, 4), "bf16": torch.randn(5).bfloat16(), "mask": torch.tensor([True, False])}
    write_state_dict(tmp_path / "w.safetensors", state)
    got = load_file(tmp_path / "w.safetensors")
    assert sorted(got) == sorted(state)
    for name, tensor in state.items():
        want = tensor.float() if tensor.is_floating_point() else tensor  # floating point saved as fp32
        assert got[name].dtype == want.dtype and torch.equal(got[name], want), name
    assert not (tmp_path / "w.safetensors.tmp").exists()


def test_tensors_are_consumed_one_at_a_time(tmp_path):
    """The writer takes each tensor as the generator yields it: a generator that frees each tensor
    before making the next one is never ahead of the file."""
    made = []

    def tensors():
        for i in range(3):
            made.append(i)
            yield torch.full((2,), float(i))

    write_streaming(tmp_path / "w.safetensors", [(f"t{i}", (2,), torch.float32) for i in range(3)], tensors())
    assert made == [0, 1, 2]
    assert load_file(tmp_path / "w.safetensors")["t2"].tolist() == [2.0, 2.0]


def test_a_tensor_unlike_its_header_entry_is_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(ValueError, match=r"b: got \(3,\) torch.float32, the header says \(2,\)"):
        write_streaming(tmp_path / "w.safetensors", [("a", (2,), torch.float32), ("b", (2,), torch.float32)],
                        iter([torch.zeros(2), torch.zeros(3)]))
    assert not (tmp_path / "w.safetensors").exists()


def test_either_kind_is_found_and_read_and_a_damaged_file_is_named(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "best.pt")  # a run from before safetensors
    assert find_weights(tmp_path, "best") == tmp_path / "best.pt"
    assert read_weights(tmp_path / "best.pt", "weights", "-")["w"].tolist() == [1.0, 1.0]
    write_state_dict(tmp_path / "best.safetensors", {"w": torch.zeros(2)})
    assert find_weights(tmp_path, "best") == tmp_path / "best.safetensors"  # the newer kind first
    assert find_weights(tmp_path, "last") is None
    with pytest.raises(DataError, match=f"^{tmp_path / 'last.safetensors'}: FAMAE weights not found"):
        require_weights(tmp_path, "last", "FAMAE weights", "run `distrec embed` again")
    damaged = tmp_path / "best.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-4])
    with pytest.raises(DataError, match=f"^{damaged}: weights cannot be loaded"):
        read_weights(damaged, "weights", "re-export it")
