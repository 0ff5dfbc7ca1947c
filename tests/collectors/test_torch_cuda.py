"""The one door to ``torch.cuda`` (collectors/torch_cuda.py): a function bound once answers
as ``call`` does, against the real torch of this machine (a CPU build, or CUDA not
initialised here)."""

from __future__ import annotations

import sys

import pytest

from accelscope.collectors import torch_cuda

torch = pytest.importorskip("torch", reason="the door is to torch's CUDA functions")


def test_a_bound_function_answers_as_call_does():
    assert torch_cuda.bound("cuda.is_available")() is torch_cuda.call("cuda.is_available") is torch.cuda.is_available()
    got, want = torch_cuda.bound("zeros")("not a shape"), torch_cuda.call("zeros", "not a shape")
    assert torch_cuda.is_na(got) and "TypeError" in got.reason and got.reason == want.reason, "a failure is contained, told the same way"


def test_a_function_this_torch_lacks_cannot_be_bound():
    assert torch_cuda.bound("cuda.no_such_function") is torch_cuda.NOT_SUPPORTED


def test_nothing_can_be_bound_before_the_program_imports_torch(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")
    assert torch_cuda.bound("cuda.is_available") is torch_cuda.NO_TORCH


def test_a_bound_function_is_looked_up_once(monkeypatch):
    original = torch.cuda.is_initialized
    bound = torch_cuda.bound("cuda.is_initialized")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: "replaced later")
    assert bound() is original(), "the function found when bound, not looked up again"
    assert torch_cuda.call("cuda.is_initialized") == "replaced later", "call walks the path at every call"
