"""The exact form of results the binding builds from core structs (issue 18 moved them to serde):
the change feed's tuples, `queue_depths` and `recover_runs` keep their keys, order and types."""

import time


def test_change_events_are_tuples_in_the_documented_order(queue):
    cursor = queue.change_cursor()
    task_id = queue.enqueue("resize", {"w": 1}, queue="images", max_attempts=3)
    [task] = queue.claim("w1", queues=["images"])
    queue.progress(task, 0.5, step="scaling", message="half")
    before_ms = int(time.time() * 1000) - 60_000
    changes, more = queue.changes_since(cursor, limit=100)
    assert isinstance(changes, list) and more is False
    created = changes[0]
    assert type(created) is tuple and len(created) == 13
    kind, id_, type_, qname, status, progress, step, message, at_ms, attempts, max_attempts, worker, error = created
    assert (kind, id_, type_, qname, status) == ("task.created", task_id, "resize", "images", "running")
    assert (progress, step, message) == (0.5, "scaling", "half") and type(progress) is float
    assert type(at_ms) is int and at_ms > before_ms
    assert (attempts, max_attempts, worker, error) == (1, 3, "w1", None)

    queue.fail(task, "boom", retry=False)
    [failed], _ = queue.changes_since(cursor)
    assert failed[0] == "task.status" and failed[4] == "failed" and failed[12] == "boom"


def test_queue_depths_is_a_dict_of_dicts_sorted_by_queue(queue):
    queue.enqueue("t", queue="b")
    queue.enqueue("t", queue="a")
    queue.claim("w1", queues=["a"])
    depths = queue.queue_depths(["b", "a", "empty"])
    assert list(depths) == ["a", "b", "empty"]
    assert depths["a"] == {"queued": 0, "running": 1}
    assert list(depths["b"].items()) == [("queued", 1), ("running", 0)]
    assert depths["empty"] == {"queued": 0, "running": 0}


def test_recovered_runs_are_dicts_with_their_keys_in_order(queue):
    queue.start_run("r1", "job", {"k": 1}, worker_id="dead")
    [item] = queue.recover_runs(rerun_types=["job"], dead_holders=["dead"])
    assert type(item) is dict
    assert list(item) == ["task_id", "run_id", "type", "holder", "requeued", "error"]
    assert (item["run_id"], item["type"], item["holder"], item["requeued"]) == ("r1", "job", "dead", True)
    assert type(item["task_id"]) is int and item["error"].startswith("interrupted:")
