//! The claim's plans at 100,000 queued tasks: each lane's first rows through its claim index,
//! never a scan of the table nor a sort of the backlog, for every strategy and batch size.

use super::task;
use super::util::pg_or_skip;
use crate::model::new_task::NewTask;
use crate::model::strategy::Strategy;
use crate::storage::Driver;
use serde_json::Value;

/// What a plan does that a claim must not: a sequential scan, or a Sort with a scan of `tasks`
/// below it that no Limit cuts short (a sort of the backlog rather than of each lane's first
/// rows). Also collects the indexes the scans of `tasks` use.
fn faults(node: &Value, sort_above: bool, limited: bool, indexes: &mut Vec<String>) -> Vec<String> {
    let kind = node["Node Type"].as_str().unwrap_or("");
    let relation = node["Relation Name"].as_str();
    let mut out = Vec::new();
    if kind == "Seq Scan" {
        out.push(format!("Seq Scan on {}", relation.unwrap_or("?")));
    }
    if relation == Some("tasks") {
        if let Some(i) = node["Index Name"].as_str() {
            indexes.push(i.to_string());
        }
        if sort_above && !limited {
            out.push(format!(
                "Sort over the backlog ({kind} on tasks below a Sort without a Limit)"
            ));
        }
    }
    let (sort_above, limited) = match kind {
        "Sort" | "Incremental Sort" => (true, false),
        "Limit" => (sort_above, sort_above || limited),
        _ => (sort_above, limited),
    };
    for child in node["Plans"].as_array().into_iter().flatten() {
        out.extend(faults(child, sort_above, limited, indexes));
    }
    out
}

#[test]
fn no_claim_plan_scans_or_sorts_the_backlog_at_100_000_queued() {
    let (db, q) = pg_or_skip!();
    for batch in 0..10 {
        let tasks: Vec<NewTask> = (0..10_000i64)
            .map(|i| {
                let n = batch * 10_000 + i;
                let mut t = task(&format!("t{}", n % 4), 1 + (n * 37) % 1000);
                if n % 20 == 0 {
                    t.delay_ms = Some(3_600_000);
                }
                t
            })
            .collect();
        q.enqueue_many(&tasks).unwrap();
    }
    // Some finished history beside the backlog, and fresh statistics.
    db.client()
        .execute(
            "UPDATE tasks SET status = 'completed', finished_at = created_at WHERE id % 10 = 3",
            &[],
        )
        .unwrap();
    q.analyze().unwrap();
    let queued = q.stats(None).unwrap().counts["queued"];
    assert!((85_000..=95_000).contains(&queued), "{queued}");
    // The check rejects the plain form over the same backlog, with the same statistics.
    let naive: Value = db
        .client()
        .query_one(
            "EXPLAIN (FORMAT JSON) SELECT id FROM tasks
             WHERE lane_id = ANY (ARRAY(SELECT id FROM lanes)) AND status = 'queued' AND run_after <= now_ms()
             ORDER BY priority, run_after, id LIMIT 10 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        !faults(&naive[0]["Plan"], false, false, &mut Vec::new()).is_empty(),
        "{naive:#}"
    );
    for s in [
        Strategy::Priority,
        Strategy::Fifo,
        Strategy::Lifo,
        Strategy::WeightedRandom,
    ] {
        let want_index = match s {
            Strategy::Priority => "tasks_claim_priority",
            Strategy::Fifo | Strategy::Lifo => "tasks_claim_time",
            Strategy::WeightedRandom => "tasks_claim_weighted",
        };
        for limit in [1, 100, 5_000] {
            let plan = q.explain_claim_json(s, limit).unwrap();
            let root = &plan[0]["Plan"];
            let mut indexes = Vec::new();
            let found = faults(root, false, false, &mut indexes);
            assert!(found.is_empty(), "{s:?} limit {limit}: {found:?}\n{plan:#}");
            assert!(
                indexes.iter().any(|i| i == want_index),
                "{s:?} limit {limit}: {indexes:?}\n{plan:#}"
            );
            assert!(
                indexes.iter().all(|i| i == want_index || i == "tasks_pkey"),
                "{s:?} limit {limit}: {indexes:?}"
            );
            // The picked rows are found again by primary key, not by walking a claim index.
            assert!(
                indexes.iter().any(|i| i == "tasks_pkey"),
                "{s:?} limit {limit}: {indexes:?}\n{plan:#}"
            );
        }
        let text = q.task_explain_get_available(s).unwrap().join("\n");
        assert!(
            text.contains(want_index) && text.contains("LockRows"),
            "{text}"
        );
    }
}

#[test]
fn the_check_finds_a_sort_of_the_backlog() {
    // A plain `lane_id = ANY(...) ORDER BY ... LIMIT` over the whole backlog, as the check
    // must reject it.
    let sorted_backlog = serde_json::json!({
        "Node Type": "Limit", "Plans": [{
            "Node Type": "Sort", "Plans": [{
                "Node Type": "Bitmap Heap Scan", "Relation Name": "tasks"
            }]
        }]
    });
    assert_eq!(
        faults(&sorted_backlog, false, false, &mut Vec::new()).len(),
        1
    );
    let per_lane = serde_json::json!({
        "Node Type": "Sort", "Plans": [{
            "Node Type": "Nested Loop", "Plans": [
                {"Node Type": "Function Scan"},
                {"Node Type": "Limit", "Plans": [{
                    "Node Type": "Index Scan", "Relation Name": "tasks", "Index Name": "tasks_claim_time"
                }]}
            ]
        }]
    });
    assert!(faults(&per_lane, false, false, &mut Vec::new()).is_empty());
    let seq = serde_json::json!({"Node Type": "Seq Scan", "Relation Name": "tasks"});
    assert_eq!(faults(&seq, false, false, &mut Vec::new()).len(), 1);
}
