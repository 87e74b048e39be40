"""Shared fixtures. TRITON_INTERPRET must be set before any @triton.jit runs, so it is set here,
before test modules import the kernels: that is how the Triton kernels run on CPU tensors."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("toolken", deadline=None, print_blob=True)
settings.load_profile("toolken")

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
DATA = os.path.join(SHARED, "data")


@pytest.fixture(scope="session")
def data_dir():
    if not os.path.isdir(DATA):
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


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
