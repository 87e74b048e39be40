"""Shared fixtures. TRITON_INTERPRET must be set before any @triton.jit runs, so it is set here,
before test modules import the kernels: that is how the Triton kernels run on CPU tensors."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tiny import make_tiny_tokenizer, tiny_llama  # noqa: E402,F401  (the shared factories)
from hypothesis import settings  # noqa: E402

settings.register_profile("toolken", deadline=None, print_blob=True)
settings.load_profile("toolken")

# real data written outside this project: $TOOLKEN_DATA, else ../shared/data beside the checkout
DATA = os.environ.get("TOOLKEN_DATA") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny test models run far faster on one intra-op thread than on busy shared cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def data_dir():
    if not os.path.isdir(DATA):
        pytest.skip(f"needs the shared data folder (MaskBench / full Seal-Tools), not found at {DATA}; set TOOLKEN_DATA")
    return DATA


@pytest.fixture(scope="session")
def seal_tools_dir():
    """Seal-Tools (``tool.jsonl.gz``, ``dev.jsonl.gz``, ``test_in_domain.jsonl.gz``): the full set
    from the shared data folder when present, else the Apache-2.0 subset that ships in the
    package for the demo (677 tools, 200 dev / 100 test queries), so the tests run anywhere."""
    full = os.path.join(DATA, "seal-tools")
    if os.path.isfile(os.path.join(full, "tool.jsonl.gz")):
        return full
    from toolken.demo import BUNDLE

    return str(BUNDLE)


@pytest.fixture(scope="session")
def llama3_tokenizer():
    from toolken.local_models import llama3_tokenizer

    return llama3_tokenizer()


@pytest.fixture(scope="session")
def tekken_tokenizer():
    from toolken.local_models import tekken_tokenizer

    return tekken_tokenizer()


@pytest.fixture(scope="session")
def mistral_tokenizer():
    from toolken.local_models import mistral_sentencepiece_tokenizer

    return mistral_sentencepiece_tokenizer()


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from toolken.local_models import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_tokenizer_session():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_session):
    """A fresh copy per test (extend mutates tokenizers)."""
    import copy

    return copy.deepcopy(tiny_tokenizer_session)
