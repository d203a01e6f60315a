"""The seed document's examples, unchanged but for the import line, against ``gprochat serve``.

The examples use top-level ``async for``, as in an asyncio REPL, so they are fed to
``python -m asyncio`` exactly as written.
"""

import subprocess
import sys

from .processes import clean_env, served

CLASS_EXAMPLE = """\
from gprochat import GPROChat
from gprochat.typing import Messages

provider = GPROChat()
messages: Messages = [
    {'role': 'user', 'content': 'Hello!'},
    {'role': 'assistant', 'content': 'Hi there!'},
]

async for chunk in provider.create_async_generator(model='gemini-1.5-pro', messages=messages):
    print(chunk)

"""

SIGNATURE_EXAMPLE = """\
from gprochat import GPROChat
signature = GPROChat.generate_signature(timestamp=1693631200000, message="Hello, world!")
print(signature) # Output: a6564458c4c8d73259a8114e149f17673d22df2f86a29f85342e1105312d94e1
"""


def run_in_asyncio_repl(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncio"], input=code, env=env, capture_output=True, text=True, timeout=60
    )


def test_create_async_generator_example_prints_a_streamed_answer() -> None:
    with served("--echo-delay", "0.01") as base_url:
        result = run_in_asyncio_repl(CLASS_EXAMPLE, clean_env(GPROCHAT_BASE_URL=base_url))
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(printed) > 2  # one print per streamed chunk
    # print() put a newline after each chunk; without newlines the prompt reads whole.
    assert "User: Hello!Assistant: Hi there!Assistant:" in result.stdout.replace("\n", "")
    assert "Error" not in result.stderr and "Traceback" not in result.stderr


def test_generate_signature_example_prints_the_protocol_value() -> None:
    result = run_in_asyncio_repl(SIGNATURE_EXAMPLE, clean_env())
    assert "1973b490dd7d9325e53ac8d4a6509d0b61eeee96c83a45fbadeefe2f16ac286a" in result.stdout
