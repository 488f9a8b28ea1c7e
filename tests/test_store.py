"""_store: the journal survives restarts, kills and concurrent writers; image files are content-addressed."""

from __future__ import annotations

import hashlib
import io
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from qimage_nb._contract import GenerationRequest
from qimage_nb.journal._png_text import read_provenance
from qimage_nb.journal._store import JobRecord, Store

REPO = Path(__file__).resolve().parents[1]


def request(prompt: str = "a red fox in snow", **fields) -> GenerationRequest:
    return GenerationRequest.create(prompt, **fields)


def png(color=(200, 30, 30), size=(48, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def download(store: Store, data: bytes, suffix: str = ".part") -> Path:
    """What the client does: stream a body into a temp path of the store."""
    temp = store.temp_path(suffix)
    temp.write_bytes(data)
    return temp


def complete(store: Store, key: str, bodies: list[bytes], task_id: str | None = None) -> JobRecord:
    """Drive one job through the client's sequence: task id, polls, downloads, completed."""
    task_id = task_id or f"task_{key}"
    store.set_task_id(key, task_id)
    store.record_status(key, "pending", 0)
    store.record_status(key, "processing", 40)
    urls = [f"https://cdn.example/{task_id}/{i}.png" for i in range(len(bodies))]
    for index, body in enumerate(bodies):
        store.save_image(
            key, index, urls[index], download(store, body), {"prompt": "p", "task_id": task_id},
            width=48, height=32,
        )  # fmt: skip
    store.record_status(key, "completed", 100, urls=urls)
    record = store.get(key)
    assert record is not None
    return record


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "home")
    yield s
    s.close()


# --- construction ------------------------------------------------------------------------------


def test_construction_does_no_io_and_first_use_creates_the_layout(tmp_path):
    root = tmp_path / "not-yet"
    store = Store(root)
    assert store.root == root and not root.exists()
    store.begin(request(), "k1")
    assert (root / "journal.sqlite3").is_file()
    assert (root / "images").is_dir() and (root / "tmp").is_dir()
    assert store.temp_path().parent == root / "tmp"
    assert store.temp_path() != store.temp_path()
    store.close()


def test_default_uses_qimage_home_then_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setenv("QIMAGE_HOME", str(tmp_path / "custom"))
    assert Store.default().root == tmp_path / "custom"
    assert Store().root == tmp_path / "custom"
    monkeypatch.delenv("QIMAGE_HOME")
    import platformdirs

    assert Store.default().root == Path(platformdirs.user_data_dir("qimage_nb", appauthor=False))


# --- the journal -------------------------------------------------------------------------------


def test_begin_is_durable_before_anything_else(tmp_path):
    # A kernel that journals a submit and then dies before its POST: the entry must be there.
    root = tmp_path / "home"
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from qimage_nb._contract import GenerationRequest
        from qimage_nb.journal._store import Store
        Store(Path({str(root)!r})).begin(GenerationRequest.create("一只猫 🐱", n=3), "key-1", label="cats")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    record = Store(root).get("key-1")
    assert record is not None
    assert (record.status, record.task_id, record.label) == ("submitting", None, "cats")
    assert record.request == request("一只猫 🐱", n=3)
    assert [r.key for r in Store(root).pending()] == ["key-1"]


def test_round_trip_of_every_field(store):
    req = request(
        "neon sign saying 你好", model="qwen-image-2.0-pro", size="16:9", resolution="2K", n=2,
        negative_prompt="blurry", image_urls=["https://example.com/ref.png"],
    )  # fmt: skip
    before = time.time()
    first = store.begin(req, "key-a", label="banner")
    assert first.request == req and first.fingerprint == req.fingerprint()
    assert (first.status, first.progress, first.urls, first.image_paths) == ("submitting", 0, (), ())
    assert first.created_at >= before and first.completed_at is None and not first.terminal

    store.set_task_id("key-a", "task_A")
    store.record_status("key-a", "processing", 55)
    mid = store.get("task_A")
    assert mid is not None and (mid.key, mid.status, mid.progress) == ("key-a", "processing", 55)
    assert mid.updated_at >= first.updated_at

    done = complete(store, "key-a", [png((1, 2, 3)), png((4, 5, 6))], task_id="task_A")
    assert (done.status, done.progress, done.terminal, done.downloaded) == ("completed", 100, True, True)
    assert done.urls == ("https://cdn.example/task_A/0.png", "https://cdn.example/task_A/1.png")
    assert all(p is not None and p.is_file() for p in done.image_paths)
    assert done.completed_at is not None and done.completed_at >= done.created_at
    assert store.get("key-a") == store.get("task_A")
    assert store.get("nothing") is None


def test_failed_keeps_its_error_and_is_terminal(store):
    store.begin(request(), "k")
    store.set_task_id("k", "t")
    store.record_status("k", "failed", 0, error="Input data may contain inappropriate content")
    record = store.get("t")
    assert record is not None
    assert (record.status, record.error, record.terminal, record.downloaded) == (
        "failed", "Input data may contain inappropriate content", True, False,
    )  # fmt: skip


def test_events_are_appended_only_on_change(store):
    store.begin(request(), "k")
    store.set_task_id("k", "t")
    for status, progress in [("pending", 0), ("pending", 0), ("processing", 10), ("processing", 10),
                             ("processing", 60), ("completed", 100), ("completed", 100)]:  # fmt: skip
        store.record_status("k", status, progress, urls=["https://cdn.example/0.png"])
    timeline = [(e["status"], e["progress"]) for e in store.events("k")]
    assert timeline == [("submitting", 0), ("submitting", 0), ("pending", 0), ("processing", 10),
                        ("processing", 60), ("completed", 100)]  # fmt: skip
    assert store.events("k")[1]["task_id"] == "t"  # every task id a key was given is on record


def test_empty_urls_do_not_erase_known_ones(store):
    store.begin(request(), "k")
    store.record_status("k", "completed", 100, urls=["https://cdn.example/0.png"])
    store.record_status("k", "completed", 100)
    record = store.get("k")
    assert record is not None and record.urls == ("https://cdn.example/0.png",)


def test_begin_again_with_the_same_key(store):
    first = store.begin(request("a"), "k")
    assert store.begin(request("a"), "k") == first
    with pytest.raises(ValueError, match="different request"):
        store.begin(request("b"), "k")
    assert len(store.history()) == 1


def test_bad_calls_are_refused(store):
    with pytest.raises(KeyError):
        store.record_status("missing", "pending")
    with pytest.raises(KeyError):
        store.set_task_id("missing", "t")
    store.begin(request(), "k")
    with pytest.raises(ValueError, match="unknown job status"):
        store.record_status("k", "done")
    with pytest.raises(ValueError):
        store.set_task_id("k", " ")
    with pytest.raises(KeyError):
        store.save_image("missing", 0, "u", download(store, png()), {}, width=1, height=1)


def test_a_task_id_belongs_to_one_entry(store):
    # A task adopted by id in one kernel while another's submit of it was still in flight: the
    # submit's own key wins, and the adoption is closed with a note instead of a second live row.
    store.begin(GenerationRequest(prompt=""), "adopted:t")
    store.set_task_id("adopted:t", "t")
    store.begin(request(), "real-key")
    store.set_task_id("real-key", "t")
    assert store.get("t").key == "real-key"
    adopted = store.get("adopted:t")
    assert adopted.task_id is None and adopted.status == "failed" and "real-key" in adopted.error
    assert [r.key for r in store.pending()] == ["real-key"]


def test_placeholder_requests_round_trip(store):
    # The client adopts unknown task ids with an empty-prompt placeholder, which validation refuses.
    store.begin(GenerationRequest(prompt=""), "adopted:x")
    assert store.get("adopted:x").request == GenerationRequest(prompt="")


def test_pending_semantics(store):
    store.begin(request("lost answer"), "no-task-id")  # journaled, then the POST's answer was lost
    store.begin(request("queued"), "queued")
    store.set_task_id("queued", "t-queued")
    store.record_status("queued", "pending", 0)
    store.begin(request("running"), "running")
    store.set_task_id("running", "t-running")
    store.record_status("running", "processing", 70)
    store.begin(request("failed"), "failed")
    store.record_status("failed", "failed", error="moderation")
    store.begin(request("cancelled"), "cancelled")
    store.record_status("cancelled", "cancelled")
    store.begin(request("finished"), "finished")
    complete(store, "finished", [png((9, 9, 9))])
    store.begin(request("half"), "half-downloaded")  # completed, but one image never landed
    store.set_task_id("half-downloaded", "t-half")
    store.save_image("half-downloaded", 0, "https://cdn.example/0.png", download(store, png((7, 7, 7))),
                     {}, width=48, height=32)  # fmt: skip
    store.record_status("half-downloaded", "completed", 100,
                        urls=["https://cdn.example/0.png", "https://cdn.example/1.png"])  # fmt: skip

    pending = store.pending()
    assert [r.key for r in pending] == ["half-downloaded", "running", "queued", "no-task-id"]
    lost = pending[-1]
    assert lost.task_id is None and lost.request.prompt == "lost answer"
    half = pending[0]
    assert half.image_paths[0] is not None and half.image_paths[1] is None and not half.downloaded


def test_a_deleted_file_puts_a_job_back_in_pending_and_out_of_the_cache(store):
    req = request("cache me", n=2)
    store.begin(req, "k")
    record = complete(store, "k", [png((1, 1, 1)), png((2, 2, 2))])
    assert store.find_cached(req.fingerprint()) == record
    assert store.pending() == []

    record.image_paths[1].unlink()
    assert store.find_cached(req.fingerprint()) is None
    assert record.downloaded is False  # checks the disk when asked, not when built
    again = store.get("k")
    assert again.image_paths[1] is None and [r.key for r in store.pending()] == ["k"]


def test_find_cached_prefers_the_newest_complete_job(store):
    req = request("same request")
    store.begin(req, "old")
    complete(store, "old", [png((10, 0, 0))])
    store.begin(req, "new")
    complete(store, "new", [png((20, 0, 0))])
    store.begin(req, "newest-but-running")
    store.set_task_id("newest-but-running", "t-run")
    store.begin(request("other"), "other")
    complete(store, "other", [png((30, 0, 0))])

    assert store.find_cached(req.fingerprint()).key == "new"
    store.get("new").image_paths[0].unlink()
    assert store.find_cached(req.fingerprint()).key == "old"
    assert store.find_cached(request("never made").fingerprint()) is None


def test_history_is_newest_first_and_limited(store):
    for i in range(5):
        store.begin(request(f"p{i}"), f"k{i}")
    assert [r.key for r in store.history()] == ["k4", "k3", "k2", "k1", "k0"]
    assert [r.key for r in store.history(2)] == ["k4", "k3"]
    assert store.history(0) == []
    with pytest.raises(ValueError):
        store.history(-1)


# --- image files -------------------------------------------------------------------------------


def test_images_are_named_by_the_hash_of_the_bytes_as_received(store):
    body = png((5, 6, 7))
    store.begin(request(), "k")
    path = store.save_image("k", 0, "https://cdn.example/0.png", download(store, body),
                            {"prompt": "p"}, width=48, height=32)  # fmt: skip
    digest = hashlib.sha256(body).hexdigest()
    assert path.parent == store.root / "images" / digest[:2]
    assert path.name.startswith(f"{digest}-") and path.suffix == ".png"
    assert path.read_bytes() != body  # provenance chunks were added after hashing
    with Image.open(path) as saved, Image.open(io.BytesIO(body)) as received:
        assert saved.tobytes() == received.tobytes()
    assert list((store.root / "tmp").iterdir()) == []  # the temp file was moved, not copied


def test_identical_bytes_are_stored_once(store):
    body = png((1, 2, 3))
    store.begin(request("a"), "a")
    store.begin(request("b"), "b")
    first = store.save_image("a", 0, "https://cdn.example/a.png", download(store, body), {}, width=48, height=32)
    second = store.save_image("b", 0, "https://cdn.example/b.png", download(store, body), {}, width=48, height=32)
    other = store.save_image("b", 1, "https://cdn.example/c.png", download(store, png((3, 2, 1))), {},
                             width=48, height=32)  # fmt: skip
    assert first == second != other
    assert len(list((store.root / "images").rglob("*.png"))) == 2
    assert list((store.root / "tmp").iterdir()) == []


def test_identical_bytes_from_two_tasks_keep_their_own_provenance(store):
    body = png((9, 9, 9))
    store.begin(request("a"), "a")
    store.begin(request("b"), "b")
    first = store.save_image("a", 0, "https://cdn.example/a.png", download(store, body),
                             {"task_id": "task_A", "prompt": "first"}, width=48, height=32)  # fmt: skip
    second = store.save_image("b", 0, "https://cdn.example/b.png", download(store, body),
                              {"task_id": "task_B", "prompt": "second"}, width=48, height=32)  # fmt: skip
    assert first != second
    with Image.open(first) as one, Image.open(second) as two:
        assert (one.text["task_id"], two.text["task_id"]) == ("task_A", "task_B")
        assert one.tobytes() == two.tobytes()


def test_save_image_is_idempotent_per_key_and_index(store):
    store.begin(request(n=1), "k")
    body = png()
    paths = {store.save_image("k", 0, "https://cdn.example/0.png", download(store, body), {}, width=48, height=32)
             for _ in range(3)}  # fmt: skip
    assert len(paths) == 1
    assert store.get("k").image_paths == (paths.pop(),)


def test_provenance_is_readable_with_pillow_including_non_latin_text(store):
    req = request("雪中的红狐狸 🦊", negative_prompt="模糊")
    store.begin(req, "k")
    store.set_task_id("k", "task_fox")
    provenance = {
        "prompt": req.prompt, "negative_prompt": req.negative_prompt, "model": req.model,
        "size": req.size, "resolution": req.resolution, "task_id": "task_fox",
        "source_url": "https://cdn.example/fox.png",
    }  # fmt: skip
    path = store.save_image("k", 0, "https://cdn.example/fox.png", download(store, png()), provenance,
                            width=48, height=32)  # fmt: skip
    text = Image.open(path).text
    for key, value in provenance.items():
        assert text[key] == value
    assert text["Software"] == "qimage_nb" and text["created"].startswith("20")
    assert read_provenance(path) == text


def test_a_jpeg_from_the_cdn_is_kept_as_is_with_a_sidecar(store):
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 128, 255)).save(out, "JPEG")
    store.begin(request(), "k")
    path = store.save_image("k", 0, "https://cdn.example/0.jpg", download(store, out.getvalue()),
                            {"prompt": "一只猫"}, width=40, height=40)  # fmt: skip
    assert path.suffix == ".jpg" and path.read_bytes() == out.getvalue()
    assert read_provenance(path)["prompt"] == "一只猫"


def test_a_temp_file_from_elsewhere_is_accepted(store, tmp_path):
    store.begin(request(), "k")
    outside = tmp_path / "elsewhere.part"
    outside.write_bytes(png())
    path = store.save_image("k", 0, "https://cdn.example/0.png", outside, {}, width=48, height=32)
    assert path.is_file() and not outside.exists()


def test_the_journal_never_holds_the_api_key(store, monkeypatch):
    secret = "sk-test-0123456789abcdef-never-store-me"
    monkeypatch.setenv("QIMAGE_API_KEY", secret)
    store.begin(request("prompt"), "k")
    complete(store, "k", [png()])
    store.close()
    for path in store.root.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# --- concurrency and crashes -------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qimage_nb._contract import GenerationRequest
    from qimage_nb.journal._store import Store

    root, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = Store(root)
    for i in range(count):
        key = f"{prefix}-{i}"
        store.begin(GenerationRequest.create(f"{prefix} prompt {i}"), key)
        store.set_task_id(key, f"task-{key}")
        store.record_status(key, "processing", i % 100)
        print(key, flush=True)  # reported only once committed
    """
)


def test_two_processes_writing_at_once(tmp_path):
    root = tmp_path / "home"
    def spawn(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), name, "200"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    procs = [spawn("kernel-a"), spawn("kernel-b")]
    results = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err
    # The writers really overlapped (else this would prove nothing about contention).
    store = Store(root)
    (a0, a1), (b0, b1) = ([store.get(f"{name}-{i}").created_at for i in (0, 199)] for name in ("kernel-a", "kernel-b"))
    assert a0 < b1 and b0 < a1
    history = store.history(1000)
    assert len(history) == 400
    assert {r.key for r in history} == {f"{p}-{i}" for p in ("kernel-a", "kernel-b") for i in range(200)}
    assert all(r.task_id == f"task-{r.key}" and r.status == "processing" for r in history)
    store.close()


def test_a_kill_mid_write_leaves_a_readable_journal(tmp_path):
    root = tmp_path / "home"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "doomed", "100000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    committed = []
    assert proc.stdout is not None
    for line in proc.stdout:
        committed.append(line.strip())
        if len(committed) >= 60:
            break
    proc.send_signal(signal.SIGKILL)  # somewhere inside the next write
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(root / "journal.sqlite3") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = Store(root)
    keys = {r.key for r in store.history(100_000)}
    assert set(committed) <= keys
    for key in committed:
        record = store.get(f"task-{key}")
        assert record is not None and record.key == key and record.status == "processing"
    store.begin(request("after the crash"), "after")  # and it still takes writes
    assert store.get("after") is not None
    store.close()


def test_threads_share_one_store(store):
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(40):
                key = f"{name}-{i}"
                store.begin(request(f"{name} {i}"), key)
                store.set_task_id(key, f"task-{key}")
                store.record_status(key, "processing", i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(40):
                store.pending()
                store.history(20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(6)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    records = store.history(1000)
    assert len(records) == 240 and len({r.task_id for r in records}) == 240


def test_close_then_use_again(store):
    store.begin(request(), "k")
    store.close()
    store.close()
    assert store.get("k") is not None


def test_version_one_journal_is_migrated_in_place(tmp_path):
    import sqlite3

    from qimage_nb._contract import GenerationRequest
    from qimage_nb.journal._store import Store

    root = tmp_path / "old"
    root.mkdir()
    conn = sqlite3.connect(root / "journal.sqlite3")
    conn.execute(
        "CREATE TABLE jobs (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, request_json TEXT NOT NULL,"
        " task_id TEXT UNIQUE, status TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0,"
        " urls_json TEXT NOT NULL DEFAULT '[]', error TEXT, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, completed_at REAL, label TEXT)"
    )
    request = GenerationRequest.create("old row")
    conn.execute(
        "INSERT INTO jobs VALUES ('k-old', ?, ?, 'task_old', 'processing', 10, '[]', NULL, 1, 1, NULL, NULL)",
        (request.fingerprint(), '{"prompt": "old row", "n": 1}'),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    store = Store(root)
    record = store.get("task_old")
    assert record is not None and record.request.prompt == "old row" and record.origin is None
    store.begin(GenerationRequest.create("new row"), "k-new", origin="https://api.example")
    assert [job.key for job in store.pending(origin="https://api.example")] == ["k-new"]
    assert {job.key for job in store.pending()} == {"k-new", "k-old"}


def test_version_two_journal_gets_scopes_equal_to_its_origins(tmp_path):
    import sqlite3

    from qimage_nb._contract import GenerationRequest
    from qimage_nb.journal._store import Store

    root = tmp_path / "v2"
    old = Store(root)
    old.begin(GenerationRequest.create("kept"), "k-old", origin="https://api.example")
    old.close()
    conn = sqlite3.connect(root / "journal.sqlite3")  # back to what a version-2 journal held
    conn.execute("ALTER TABLE jobs DROP COLUMN scope")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()

    store = Store(root)
    assert store.get("k-old").scope == "https://api.example"
    assert [job.key for job in store.pending(scope="https://api.example")] == ["k-old"]
    assert store.pending(scope="emulator:qimage_nb") == []


def test_cached_images_are_served_within_their_scope_only(store):
    done = request("a scoped request")
    store.begin(done, "k-emu", origin="http://127.0.0.1:40001", scope="emulator:qimage_nb")
    complete(store, "k-emu", [png()])
    fingerprint = done.fingerprint()
    # Another port of the same scope (the next kernel's emulator) is served; a real API is not.
    assert store.find_cached(fingerprint, scope="emulator:qimage_nb").key == "k-emu"
    assert store.find_cached(fingerprint, scope="http://127.0.0.1:40001") is None
    assert store.find_cached(fingerprint, scope="https://api.example") is None
    assert store.get("k-emu").origin == "http://127.0.0.1:40001"


# --- uploaded references ---------------------------------------------------------------------


def test_uploads_are_remembered_per_content_and_origin_in_the_journal(tmp_path):
    sha = hashlib.sha256(b"a picture").hexdigest()
    store = Store(tmp_path)
    store.begin(request(), "key-1", origin="https://api.a.example")  # an existing journal, before the table
    assert store.find_upload(sha, "https://api.a.example", 3600) is None
    store.remember_upload(sha, "https://api.a.example", "https://cdn.example/a.png")
    url, at = store.find_upload(sha, "https://api.a.example", 3600)
    assert url == "https://cdn.example/a.png" and abs(at - time.time()) < 60
    assert store.find_upload(sha, "https://api.b.example", 3600) is None  # another API: not its URL
    assert store.find_upload(sha, "https://api.a.example", -1) is None  # older than allowed
    # Another kernel on the same journal sees it, and a later upload of the same bytes wins.
    other = Store(tmp_path)
    assert other.find_upload(sha, "https://api.a.example", 3600)[0] == "https://cdn.example/a.png"
    other.remember_upload(sha, "https://api.a.example", "https://cdn.example/a2.png")
    assert store.find_upload(sha, "https://api.a.example", 3600)[0] == "https://cdn.example/a2.png"
    other.close()
    store.close()
