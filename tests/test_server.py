"""`qwen3next serve` as a real process on 127.0.0.1, driven by the official `openai`
client and by raw HTTP: shapes, streaming, the prompt cache across requests, errors,
auth, a client that disconnects, SIGTERM, and a bounded load."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cli_support import CLI, converted, isolated_env
from server_support import Server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return converted(tmp_path_factory.mktemp("serve"), rambling=True)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    s = Server(model, tmp_path_factory.mktemp("srv"), "--max-context", "4096")
    yield s
    assert s.stop() == 0


MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me about unified memory."}]


def test_models_and_health(server, model):
    client = server.client()
    assert [m.id for m in client.models.list().data] == [model.name]
    status, health = server.get("/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == model.name
    assert health["queued"] == health["running"] == 0


def test_chat_whole_and_streamed_agree_with_generate(server, model, tmp_path):
    client = server.client()
    whole = client.chat.completions.create(model=model.name, messages=MESSAGES,
                                           max_tokens=12, temperature=0)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 12
    text = whole.choices[0].message.content
    chunks = list(client.chat.completions.create(
        model=model.name, messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices
    cli = subprocess.run(CLI + ["generate", str(model), "--json", "-m", "12", "--temp", "0",
                                "--system", MESSAGES[0]["content"], "-p",
                                MESSAGES[1]["content"]],
                         env=isolated_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert json.loads(cli.stdout)["text"] == text


def test_completions(server, model):
    client = server.client()
    r = client.completions.create(model=model.name, prompt="The capital of France is",
                                  max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens == 6
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model.name, prompt="The capital of France is", max_tokens=6, temperature=0,
        stream=True) if c.choices)
    assert streamed == r.choices[0].text


def test_follow_up_turn_reports_cached_tokens(server, model):
    client = server.client()
    first = client.chat.completions.create(model=model.name, messages=MESSAGES,
                                           max_tokens=8, temperature=0)
    follow = MESSAGES + [{"role": "assistant", "content": first.choices[0].message.content},
                         {"role": "user", "content": "And then?"}]
    second = client.chat.completions.create(model=model.name, messages=follow, max_tokens=8,
                                            temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens


def test_logprobs(server, model):
    r = server.client().chat.completions.create(model=model.name, messages=MESSAGES,
                                                max_tokens=4, temperature=0, logprobs=True,
                                                top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)  # greedy


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    ({"messages": MESSAGES, "temperature": -1}, 400, "temperature must be >= 0"),
    ({"messages": []}, 400, "messages must be a non-empty list"),
    ({"messages": MESSAGES, "n": 2}, 400, "n must be 1"),
    ({"messages": MESSAGES, "model": "gpt-5"}, 404, "is not served here"),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, 422, "fit in the context"),
])
def test_error_statuses(server, body, status, words):
    got, payload, _ = server.request("POST", "/v1/chat/completions", body)
    assert got == status and words in payload["error"]["message"]
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert server.get("/health")[0] == 200  # no bad request brings it down


def test_unknown_route_and_body_too_large(server):
    status, payload, _ = server.request("GET", "/v1/nothing")
    assert status == 404 and "no such route" in payload["error"]["message"]
    status, payload, _ = server.request("POST", "/v1/chat/completions", b"x" * (17 << 20))
    assert status == 413


def test_api_key(model, tmp_path):
    s = Server(model, tmp_path, "--api-key", "sekret")
    try:
        status, payload, _ = s.request("GET", "/v1/models")
        assert status == 401 and payload["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").models.list()
        assert s.client("sekret").models.list().data
    finally:
        assert s.stop() == 0


def long_stream(s: Server) -> http.client.HTTPConnection:
    """A streamed request for 3000 tokens, running once this returns."""
    long = {"messages": MESSAGES, "max_tokens": 3000, "stream": True}
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(long).encode(),
                 {"Content-Type": "application/json"})
    conn.getresponse().fp.readline()  # the stream runs
    return conn


def queue_short(s: Server, answer: dict) -> threading.Thread:
    """A short request from another thread, its (status, payload, headers) put in answer."""
    t = threading.Thread(target=lambda: answer.update(r=s.request(
        "POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2})))
    t.start()
    time.sleep(0.5)  # it waits in the queue
    return t


def test_queue_full_is_429_and_a_disconnect_frees_the_slot(model, tmp_path):
    s = Server(model, tmp_path, "--max-queue", "1", "--max-batch", "1")  # one runs, one waits
    try:
        conn = long_stream(s)
        waiting = queue_short(s, {})  # fills the one queue slot
        status, payload, headers = s.request("POST", "/v1/chat/completions",
                                             {"messages": MESSAGES, "max_tokens": 2})
        assert status == 429 and headers.get("retry-after") == "1"
        conn.close()  # the streaming client goes away
        waiting.join(timeout=60)
        assert not waiting.is_alive()
        for _ in range(100):
            gone = [line for line in s.log if "client gone" in line]
            if gone:
                break
            time.sleep(0.1)
        generated = int(gone[0].split(", ")[1].split()[0])
        assert generated < 300  # stopped within a few tokens of the disconnect, not 3000
        assert s.request("POST", "/v1/chat/completions",
                         {"messages": MESSAGES, "max_tokens": 2})[0] == 200
    finally:
        assert s.stop() == 0


def test_a_request_waiting_outside_the_queue_counts_against_its_bound(model, tmp_path):
    """A seeded request cannot join the running one: the engine holds it aside, taken from
    the queue. It still counts: with --max-queue 1, the next request gets 429."""
    s = Server(model, tmp_path, "--max-queue", "1")
    try:
        conn = long_stream(s)
        answer = {}
        waiting = threading.Thread(target=lambda: answer.update(r=s.request(
            "POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2, "seed": 1})))
        waiting.start()
        time.sleep(0.5)  # the running request's next token takes it from the queue
        assert s.get("/health")[1]["queued"] == 1 and "r" not in answer
        status, _, _ = s.request("POST", "/v1/chat/completions",
                                 {"messages": MESSAGES, "max_tokens": 2})
        assert status == 429
        conn.close()
        waiting.join(timeout=60)
        assert answer["r"][0] == 200
    finally:
        assert s.stop() == 0


def test_sigterm_during_a_request_exits_cleanly(model, tmp_path):
    s = Server(model, tmp_path)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=s.request(
        "POST", "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 20})))
    t.start()
    time.sleep(0.3)
    assert s.stop() == 0
    t.join(timeout=60)


def test_sigterm_refuses_the_queued_request_and_exits(model, tmp_path):
    """SIGTERM while one request streams and another waits: the waiting one gets a 503,
    the server exits 0."""
    s = Server(model, tmp_path, "--max-batch", "1")  # so that the second one waits
    conn = long_stream(s)
    queued = {}
    t = queue_short(s, queued)
    assert s.stop() == 0
    t.join(timeout=60)
    status, payload, _ = queued["r"]
    assert status == 503 and "shutting down" in payload["error"]["message"], payload
    conn.close()


@pytest.mark.parametrize("mtp", [False, None])
def test_concurrent_requests_decode_as_one_batch_and_answer_as_alone(model, tmp_path, mtp):
    """Four clients at once (two streaming) are decoded together, and each gets the
    reply it gets alone; a fifth request afterwards still runs. With MTP on (the
    default), a request runs speculatively alone and joins the batch without it."""
    s = Server(model, tmp_path)
    try:
        client = s.client()
        prompts = [[{"role": "user", "content": f"Tell me about {w}."}]
                   for w in ("memory", "the sea", "numbers", "Lyon")]

        def ask(i, stream=False):
            r = client.chat.completions.create(
                model=model.name, messages=prompts[i], max_tokens=40, temperature=0,
                stream=stream, extra_body={} if mtp is None else {"mtp": mtp})
            if stream:
                return "".join(c.choices[0].delta.content or "" for c in r if c.choices)
            return r.choices[0].message.content

        alone = [ask(i) for i in range(4)]
        assert s.get("/health")[1]["peak_batch"] == 0
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda i: ask(i, stream=i % 2 == 1), range(4)))
        assert together == alone
        status, health = s.get("/health")
        assert health["peak_batch"] >= 2 and health["running"] == health["queued"] == 0
        assert ask(0) == alone[0]
    finally:
        assert s.stop() == 0


def test_a_batch_survives_a_disconnect_and_a_refused_request(model, tmp_path):
    """While a long stream and two requests decode together: the streaming client goes
    away (its row stops within a few tokens), a prompt too long for the context arrives
    (422), and the two others still get the replies they get alone."""
    s = Server(model, tmp_path, "--max-context", "4096")
    try:
        client = s.client()
        prompts = [[{"role": "user", "content": f"Tell me about {w}."}] for w in ("ice", "fire")]

        def ask(i):
            return client.chat.completions.create(
                model=model.name, messages=prompts[i], max_tokens=60, temperature=0,
                extra_body={"mtp": False}).choices[0].message.content

        alone = [ask(0), ask(1)]
        conn = long_stream(s)
        with ThreadPoolExecutor(3) as pool:
            replies = pool.map(ask, range(2))
            too_long = pool.submit(s.request, "POST", "/v1/chat/completions", {
                "messages": [{"role": "user", "content": "word " * 5000}]})
            time.sleep(0.2)
            conn.close()
            assert list(replies) == alone
            assert too_long.result()[0] == 422
        for _ in range(100):
            gone = [line for line in s.log if "client gone" in line]
            if gone:
                break
            time.sleep(0.1)
        assert int(gone[0].split(", ")[1].split()[0]) < 300
        assert s.get("/health")[1]["peak_batch"] >= 2
    finally:
        assert s.stop() == 0


def test_bounded_load(server, model):
    """8 concurrent clients x 25 requests, mixed streaming: every response well-formed."""
    errors, done = [], []

    def client_run(i):
        client = server.client()
        for j in range(25):
            try:
                if (i + j) % 2:
                    chunks = list(client.chat.completions.create(
                        model=model.name, messages=MESSAGES, max_tokens=3, stream=True))
                    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
                else:
                    r = client.chat.completions.create(model=model.name, messages=MESSAGES,
                                                       max_tokens=3)
                    assert r.choices[0].finish_reason in ("length", "stop")
                done.append(1)
            except Exception as e:  # noqa: BLE001  (collected, then asserted)
                errors.append(repr(e))

    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - started
    busy = [e for e in errors if "429" in e or "RateLimit" in e]
    print(f"load: 8 clients x 25 requests in {wall:.1f} s: {len(done)} answered, "
          f"{len(busy)} refused with 429, {len(errors) - len(busy)} other errors")
    assert not [e for e in errors if e not in busy], errors[:3]
    assert len(done) + len(busy) == 200 and len(done) >= 100
    assert server.get("/health")[0] == 200
