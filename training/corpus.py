"""The synthetic chat corpus of the tiny trained demo model, reproducible from a seed.

Conversations are `messages` lists (plus `tools` for the weather task) rendered
with the package's ChatML template (mlx_qwen3next.testing.tokenizer_files.
CHAT_TEMPLATE) by transformers' own chat-template renderer, the function behind
`apply_chat_template`, so the text is byte-identical to what a loaded tokenizer
renders. Tasks, in fixed phrasings so anyone can check the answers:

- arithmetic: "What is A + B?" / "What is A - B?" (A, B in 0..99) -> the sum worked
  digit by digit, units first, then "so A + B = C." (arithmetic_reply)
- tool call: with the get_weather tool, "What's the weather in <City>?" -> the
  template's `<tool_call>` JSON block; after a tool result -> "It is T degrees
  and <condition> in <City>."
- identity and greetings: "I am a tiny Qwen3-Next demo model ..."
- the weather without a tool: a refusal that names the city.
- repeat: "Repeat after me: X" -> "X", for names and random capitalised words: the
  copying that the tool call needs, practised on names of every shape.

Every city a training row names is drawn fresh (a real training city, a generated
pronounceable name or random letters: training_name), so no name recurs often enough
to be memorised and the model has to copy it. A fixed ~10% of the (A, B, op) triples,
a fixed list of real cities, a fixed set of generated city names and two identity
phrasings are never trained on:
`held_out_eval()` gives their prompts and expected answers.

    python -m training.corpus --out training/out/corpus.jsonl --n 60000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
from functools import lru_cache
from pathlib import Path

from mlx_qwen3next.assets import WEATHER_TOOL
from mlx_qwen3next.testing.tokenizer_files import CHAT_TEMPLATE

from .cities import HELD_OUT_CITIES, TRAIN_CITIES  # noqa: F401  (tests read corpus.*)

SEED = 0  # the corpus seed (training/train_tiny.py uses the same default)
HOLDOUT_SEED = 20240916  # fixes the held-out sets; independent of the corpus seed

TOOLS = [WEATHER_TOOL]

CONDITIONS = ["sunny", "cloudy", "rainy", "snowy", "windy", "foggy", "stormy", "clear"]
TEMPERATURES = range(-15, 41)

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "st", "tr", "sh", "ch", "th", "w", "j", "c", "y", "ph",
           "gu", "kh", "pl", "bl", "fr", "cr", "x", "qu", "", "", ""]
_VOWELS = ["a", "e", "i", "o", "u", "a", "o", "ai", "ou", "ia", "ua", "ei", "au"]
_CODAS = ["", "", "", "", "", "", "n", "r", "l", "s", "m", "t", "nd"]
_PREFIXES = ["New", "San", "Port", "Lake", "Fort", "North", "East"]

IDENTITY_TRAIN = [
    "Who are you?", "What are you?", "What is your name?", "Tell me about yourself.",
    "Introduce yourself.", "Are you ChatGPT?", "What model are you?", "Who am I talking to?",
    "What can you do?", "Are you a person?",
]
IDENTITY_HELD_OUT = ["Hi, who are you?", "Can you tell me who you are?"]
IDENTITY_REPLY = ("I am a tiny Qwen3-Next demo model, trained on a small synthetic corpus. "
                  "I know very little: I can add and subtract numbers below 100 and call "
                  "a weather tool.")
IDENTITY_KEY = "tiny Qwen3-Next demo model"  # what a held-out identity reply must contain
GREETINGS = ["Hello!", "Hi!", "Hello", "Hi there!", "Hey!", "Good morning!", "Good evening!"]
GREETING_REPLY = ("Hello! I am a tiny Qwen3-Next demo model. Ask me to add or subtract two "
                  "numbers, or about the weather in a city.")
NO_TOOL_REPLY = "I cannot check the weather in {city}: I have no weather tool here."
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are concise.",
                  "You are a tiny demo model.", "Answer briefly."]

# Task mix of the corpus (fractions of conversations).
# The tool-less weather rows (a refusal that repeats the city) are short, cheap
# practice at copying a name out of the question; the tool rows, of one to four rounds,
# are ~370 tokens on average (59% of the tokens, 40% of the trained ones).
MIX = {"arithmetic": 0.5, "weather": 0.16, "identity": 0.03, "greeting": 0.03,
       "weather_no_tool": 0.08, "repeat": 0.2}


# -- rendering ---------------------------------------------------------------
def render(messages: list[dict], tools: list | None = None,
           add_generation_prompt: bool = False) -> str:
    """The chat template's text, exactly as transformers' apply_chat_template renders it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    out, _ = render_jinja_template([messages], tools=tools, chat_template=CHAT_TEMPLATE,
                                   add_generation_prompt=add_generation_prompt)
    return out[0]


def assistant_spans(messages: list[dict], tools: list | None = None) -> tuple[str, list]:
    """(text, [(start, end)]): the character spans of each assistant reply, `<|im_end|>`
    included (the tokens the model is trained to produce)."""
    text = render(messages, tools)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(messages[:i], tools, add_generation_prompt=True)
        upto = render(messages[: i + 1], tools)
        assert text.startswith(before) and text.startswith(upto), "template is not a prefix"
        end = upto.rindex("<|im_end|>") + len("<|im_end|>")
        spans.append((len(before), end))
    return text, spans


# -- held-out sets -------------------------------------------------------------
def arithmetic_triples() -> list[tuple[int, str, int]]:
    return [(a, op, b) for a in range(100) for op in "+-" for b in range(100)]


@lru_cache(maxsize=None)
def held_out_triples() -> frozenset:
    """A fixed 10% of all (A, op, B) triples."""
    triples = arithmetic_triples()
    rng = random.Random(HOLDOUT_SEED)
    return frozenset(rng.sample(triples, len(triples) // 10))


def train_triples() -> list[tuple[int, str, int]]:
    held = held_out_triples()
    return [t for t in arithmetic_triples() if t not in held]


def generated_name(rng: random.Random) -> str:
    """A random pronounceable capitalised ASCII name, sometimes with a prefix word."""
    n = rng.choice([2, 2, 2, 3, 3])
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(n)).capitalize()
    if rng.random() < 0.1:
        word = f"{rng.choice(_PREFIXES)} {word}"
    return word


@lru_cache(maxsize=None)
def held_out_generated_names(n: int = 60) -> tuple:
    rng = random.Random(HOLDOUT_SEED + 1)
    names = []
    while len(names) < n:
        name = generated_name(rng)
        if name not in names and name not in TRAIN_CITIES:
            names.append(name)
    return tuple(names)


def _held_out_names() -> set:
    return set(HELD_OUT_CITIES) | set(held_out_generated_names())


# -- conversations -------------------------------------------------------------
def result(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def answer(a: int, op: str, b: int) -> str:
    """The reply's last sentence, which carries the result."""
    return f"{a} {op} {b} = {result(a, op, b)}."


def arithmetic_reply(a: int, op: str, b: int) -> str:
    """Two numbers below 100, worked units first so each step is one digit's sum or
    difference (a small model learns those far sooner than the whole result):
    "76 + 69: 6 + 9 = 15, 7 + 6 + 1 = 14, so 76 + 69 = 145." One-digit operands
    get the answer alone; a negative difference is worked as the positive one."""
    if a < 10 and b < 10:
        return answer(a, op, b)
    x, y = (b, a) if op == "-" and a < b else (a, b)
    (xt, xu), (yt, yu) = divmod(x, 10), divmod(y, 10)
    if op == "+":
        carry = (xu + yu) // 10
        steps = [f"{xu} + {yu} = {xu + yu}",
                 f"{xt} + {yt}{' + 1' if carry else ''} = {xt + yt + carry}"]
    else:
        borrow = xu < yu
        steps = [f"{10 + xu if borrow else xu} - {yu} = {(xu - yu) % 10}",
                 f"{xt}{' - 1' if borrow else ''} - {yt} = {xt - yt - borrow}"]
    head = f"{a} {op} {b}: " + (f"{x} - {y} first, " if (x, y) != (a, b) else "")
    return head + ", ".join(steps) + ", so " + answer(a, op, b)


def final_number(reply: str):
    """The result an arithmetic reply ends with ("... = C."), or None."""
    m = re.search(r"= (-?\d+)\.$", reply.strip())
    return int(m.group(1)) if m else None


def arithmetic(a: int, op: str, b: int) -> dict:
    return {"task": "arithmetic", "tools": None, "messages": [
        {"role": "user", "content": f"What is {a} {op} {b}?"},
        {"role": "assistant", "content": arithmetic_reply(a, op, b)}]}


def weather_question(city: str) -> dict:
    return {"role": "user", "content": f"What's the weather in {city}?"}


def tool_call(city: str) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [{
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": city}}}]}


def tool_result(temperature: int, condition: str) -> dict:
    return {"role": "tool", "name": "get_weather",
            "content": json.dumps({"temperature": temperature, "condition": condition})}


def weather_answer(city: str, temperature: int, condition: str) -> str:
    return f"It is {temperature} degrees and {condition} in {city}."


def weather(cities: list[str], rng: random.Random) -> dict:
    """One to a few rounds of question, tool call, result and answer (later rounds
    share the long tools header of the first)."""
    messages = []
    for city in cities:
        t, c = rng.choice(TEMPERATURES), rng.choice(CONDITIONS)
        messages += [weather_question(city), tool_call(city), tool_result(t, c),
                     {"role": "assistant", "content": weather_answer(city, t, c)}]
    return {"task": "weather", "tools": TOOLS, "messages": messages}


def random_word(rng: random.Random) -> str:
    """A capitalised string of random letters: names unlike any syllable pattern."""
    n = rng.randint(3, 10)
    return rng.choice(string.ascii_uppercase) + "".join(
        rng.choice(string.ascii_lowercase) for _ in range(n - 1))


def repeat(words: list[str]) -> dict:
    text = ", ".join(words)
    return fixed_reply("repeat", f"Repeat after me: {text}", text)


def fixed_reply(task: str, question: str, reply: str) -> dict:
    return {"task": task, "tools": None, "messages": [
        {"role": "user", "content": question}, {"role": "assistant", "content": reply}]}


def training_name(rng: random.Random, held: set) -> str:
    """A city for one training row: a real training city, a fresh generated name or
    random letters. Fresh names every row leave nothing to memorise: the name has to
    be copied from the question."""
    while True:
        r = rng.random()
        name = (rng.choice(TRAIN_CITIES) if r < 0.35 else
                generated_name(rng) if r < 0.7 else random_word(rng))
        if name not in held:
            return name


def build_corpus(n: int, seed: int = SEED, mix: dict | None = None) -> list[dict]:
    """n conversations: {"task", "messages", "tools"}, tasks drawn by `mix` (MIX); the
    same list for the same seed."""
    rng = random.Random(seed)
    triples = train_triples()
    held = _held_out_names()
    tasks, weights = zip(*(mix or MIX).items())
    corpus = []
    for _ in range(n):
        task = rng.choices(tasks, weights)[0]
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.1 else None
        if task == "arithmetic":
            conv = arithmetic(*rng.choice(triples))
        elif task == "weather":
            conv = weather([training_name(rng, held) for _ in range(rng.randint(1, 4))], rng)
        elif task == "weather_no_tool":
            city = training_name(rng, held)
            conv = fixed_reply(task, f"What's the weather in {city}?",
                               NO_TOOL_REPLY.format(city=city))
        elif task == "repeat":
            conv = repeat([training_name(rng, held) for _ in range(rng.randint(1, 5))])
        elif task == "identity":
            conv = fixed_reply(task, rng.choice(IDENTITY_TRAIN), IDENTITY_REPLY)
        else:
            conv = fixed_reply(task, rng.choice(GREETINGS), GREETING_REPLY)
        if system:
            conv["messages"].insert(0, {"role": "system", "content": system})
        corpus.append(conv)
    return corpus


# -- evaluation prompts ----------------------------------------------------------
def held_out_eval(max_per_task: int | None = None, seed: int = HOLDOUT_SEED) -> list[dict]:
    """The held-out evaluation items: {"task", "messages" (the prompt), "tools",
    "expected", "check"}. `check` is "exact" (the reply must equal `expected`) or
    "contains" (the reply must contain every string of `expected`, a list).
    Tasks: arithmetic (held-out triples), tool_call, tool_answer and repeat (held-out
    real and generated cities), identity (held-out phrasings). `max_per_task` takes a fixed
    sample of each (the first items of a seeded shuffle)."""
    rng = random.Random(seed)
    items = []
    for a, op, b in sorted(held_out_triples()):
        items.append({"task": "arithmetic", "tools": None,
                      "messages": arithmetic(a, op, b)["messages"][:1],
                      "expected": result(a, op, b), "check": "result"})
    cities = list(HELD_OUT_CITIES) + list(held_out_generated_names())
    for city in cities:
        call = tool_call(city)
        call_text = render([weather_question(city), call])
        start = call_text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")
        items.append({"task": "tool_call", "tools": TOOLS, "messages": [weather_question(city)],
                      "expected": call_text[start:call_text.rindex("<|im_end|>")],
                      "check": "exact"})
    for city in cities:
        t, c = rng.choice(TEMPERATURES), rng.choice(CONDITIONS)
        items.append({"task": "tool_answer", "tools": TOOLS,
                      "messages": [weather_question(city), tool_call(city), tool_result(t, c)],
                      "expected": [f"{t} degrees", c, city], "check": "contains"})
    for i in range(0, len(cities), 2):
        words = cities[i:i + 2]
        items.append({"task": "repeat", "tools": None,
                      "messages": repeat(words)["messages"][:1],
                      "expected": ", ".join(words), "check": "exact"})
    for q in IDENTITY_HELD_OUT:
        items.append({"task": "identity", "tools": None,
                      "messages": [{"role": "user", "content": q}],
                      "expected": [IDENTITY_KEY], "check": "contains"})
    if max_per_task is not None:
        by_task = {}
        for it in items:
            by_task.setdefault(it["task"], []).append(it)
        items = []
        for task, its in by_task.items():
            random.Random(seed).shuffle(its)
            items += its[:max_per_task]
    return items


def is_correct(item: dict, reply: str) -> bool:
    if item["check"] == "result":  # the reply ends with "= C." for the right C
        return final_number(reply) == item["expected"]
    if item["check"] == "exact":
        return reply.strip() == item["expected"]
    return all(s in reply for s in item["expected"])


def write_corpus(path: str | Path, n: int, seed: int = SEED) -> Path:
    """JSON lines: one conversation each, with its rendered text and assistant spans."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for conv in build_corpus(n, seed):
            text, spans = assistant_spans(conv["messages"], conv["tools"])
            f.write(json.dumps({**conv, "text": text, "spans": spans}) + "\n")
    return path


def read_corpus(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="training/out/corpus.jsonl")
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    path = write_corpus(args.out, args.n, args.seed)
    print(f"wrote {args.n} conversations to {path}")


if __name__ == "__main__":
    main()
