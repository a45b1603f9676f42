//! Enqueue one task or many in one transaction, with idempotency keys and delays.

use crate::model::claim::LaneKey;
use crate::model::error::Result;
use crate::model::new_task::requires_as_given;
use crate::model::new_task::requires_text;
use crate::model::new_task::NewTask;
use crate::model::time::now_ms;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::dependencies;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params_from_iter, ToSql};
use std::sync::LazyLock;

/// Rows per multi-row INSERT in `enqueue_many` (12 parameters each, far below SQLite's limit).
const ROWS_PER_INSERT: usize = 32;

/// `INSERT INTO tasks` of `rows` tasks, 12 parameters each in the order of `row_params`, or of one
/// task followed by its idempotency key (?13) that yields to an existing one when `keyed`.
fn insert_sql(rows: usize, keyed: bool) -> String {
    // Parameter k of row r is ?(12 r + k); 0 stands for the literal status, and created_at and
    // updated_at share the time (?9).
    const SLOTS: [usize; 14] = [1, 2, 3, 4, 5, 0, 6, 7, 8, 9, 9, 10, 11, 12];
    let rows: Vec<String> = (0..rows)
        .map(|r| {
            let mut values: Vec<String> = SLOTS
                .iter()
                .map(|&k| match k {
                    0 => "'queued'".to_string(),
                    k => format!("?{}", r * 12 + k),
                })
                .collect();
            if keyed {
                values.push("?13".to_string());
            }
            format!("({})", values.join(", "))
        })
        .collect();
    // A statement that writes several rows and may stop at a constraint (ABORT, the default)
    // opens a statement journal to undo its own earlier rows, copying each page it touches first.
    // These rows were validated before, and any error rolls the whole transaction back (`Db::write`),
    // so FAIL (stop, keep the earlier rows of the statement) loses nothing and needs no journal.
    format!(
        "INSERT{} INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts, run_after, wkey,
                            created_at, updated_at, requires, timeout_ms, retry_policy{})
         VALUES {}{}",
        if rows.len() > 1 { " OR FAIL" } else { "" },
        if keyed { ", idempotency_key" } else { "" },
        rows.join(", "),
        if keyed {
            " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        } else {
            ""
        }
    )
}

/// `INSERT INTO tasks` of `rows` tasks of one lane, priority and attempt limit that require
/// nothing and have no timeout, retry policy or key (what a batch mostly holds): those and the
/// time are bound once (?1 lane, ?2 type, ?3 queue, ?4 priority, ?5 max_attempts, ?6 time), and
/// each row binds only its payload, due time and race key (?7 + 3 r, ...): a third of the
/// parameters of `INSERT_ROWS` (binding copies every text, and `clear_bindings` frees it).
/// More rows per statement were no faster (figures: benches/README.md, "Figures behind the code's
/// comments").
fn insert_uniform_sql(rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|r| {
            let p = 7 + 3 * r;
            format!(
                "(?1, ?2, ?3, ?{p}, ?4, 'queued', ?5, ?{}, ?{}, ?6, ?6, NULL, NULL, NULL)",
                p + 1,
                p + 2
            )
        })
        .collect();
    format!(
        "INSERT OR FAIL INTO tasks (lane_id, type, queue, payload, priority, status, max_attempts,
                                    run_after, wkey, created_at, updated_at, requires, timeout_ms,
                                    retry_policy)
         VALUES {}",
        rows.join(", ")
    )
}

// Formatted once each (the text keys the statement cache). Neither has RETURNING, and only the
// keyed one a conflict clause, so the common case opens no statement journal (the multi-row
// one runs OR FAIL for the same reason, see `insert_sql`).
static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1, false));
static INSERT_KEYED: LazyLock<String> = LazyLock::new(|| insert_sql(1, true));
static INSERT_ROWS: LazyLock<String> = LazyLock::new(|| insert_sql(ROWS_PER_INSERT, false));
static INSERT_UNIFORM: LazyLock<String> = LazyLock::new(|| insert_uniform_sql(ROWS_PER_INSERT));

/// The 12 parameters of task `t` in an `insert_sql` statement, with its lane, due time and race
/// key (`placed`), the time, and its `requires` and retry policy as JSON text.
fn row_params<'a>(
    t: &'a NewTask,
    (lane_id, run_after, wkey): &'a (i64, i64, f64),
    now: &'a i64,
    requires: &'a Option<String>,
    retry: &'a Option<String>,
) -> [&'a dyn ToSql; 12] {
    [
        lane_id,
        &t.task_type,
        &t.queue,
        &t.payload,
        &t.priority,
        &t.max_attempts,
        run_after,
        wkey,
        now,
        requires,
        &t.timeout_ms,
        retry,
    ]
}

/// Task ids are never handed out twice. SQLite gives a new row the largest id in the table plus
/// one, so once `purge` deleted the newest tasks their ids would come back: an old id would then
/// name another task, and a change feed that looks for ids above the highest it saw would miss
/// the new ones. `purge` records the highest id it removed as the floor (`raise_id_floor`); the
/// first task inserted afterwards is moved just above it, and the floor is dropped once passed.
/// (AUTOINCREMENT would do the same on every insert, and needs a rebuild of the table.)
pub(crate) struct IdFloor(Option<i64>);

impl IdFloor {
    /// The id of the row just inserted as `id`: moved above the floor when it is not.
    pub(crate) fn place(&mut self, tx: &WriteTx, id: i64) -> Result<i64> {
        let Some(floor) = self.0.take() else {
            return Ok(id);
        };
        tx.prepare_cached("DELETE FROM meta WHERE key = 'id_floor'")?
            .execute([])?;
        if id > floor {
            return Ok(id);
        }
        // A row inserted in this same transaction: nothing refers to it yet.
        tx.prepare_cached("UPDATE tasks SET id = ?2 WHERE id = ?1")?
            .execute([id, floor + 1])?;
        Ok(floor + 1)
    }
}

/// What a transaction that inserts tasks reads from `meta` before its inserts, in one statement
/// (enqueue is a hot path): the weighted-random race (see `claim::race`) and the id floor.
pub(crate) fn read_insert_meta(tx: &WriteTx) -> Result<(Race, IdFloor)> {
    Ok(tx
        .prepare_cached(
            "SELECT (SELECT value FROM meta WHERE key = 'wclock'),
                    (SELECT value FROM meta WHERE key = 'id_floor')",
        )?
        .query_row([], |r| {
            Ok((
                Race {
                    clock: r.get::<_, Option<f64>>(0)?.unwrap_or(0.0),
                },
                IdFloor(r.get::<_, Option<i64>>(1)?),
            ))
        })?)
}

/// Remember that ids up to `top` were used (called by `purge` when it removed the newest task).
pub(crate) fn raise_id_floor(tx: &WriteTx, top: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('id_floor', ?1)
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute([top])?;
    Ok(())
}

impl SqliteDriver {
    pub fn enqueue(&self, task: &NewTask) -> Result<i64> {
        Ok(self.enqueue_many(std::slice::from_ref(task))?[0])
    }

    /// Insert tasks the engine checked (`engine::enqueue`) in one transaction: either every task is queued or none is. An existing
    /// idempotency key yields the existing task's id (also within the batch itself).
    pub fn enqueue_many(&self, tasks: &[NewTask]) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Batch::of(tasks);
        let mut new_lanes = Vec::new();
        let ids = self.db.write(|tx| {
            new_lanes.clear();
            self.insert_in(tx, &batch, &mut new_lanes)
        })?;
        // Only lanes whose creating transaction committed enter the cache.
        self.remember_lanes(new_lanes);
        Ok(ids)
    }

    /// The inserts of `enqueue_many` inside the caller's transaction `tx` (the scheduler adds
    /// its due tasks in the transaction that advances the schedule); lanes it creates are added
    /// to `new_lanes`.
    pub(crate) fn insert_in(
        &self,
        tx: &WriteTx,
        batch: &Batch,
        new_lanes: &mut Vec<(LaneKey, i64)>,
    ) -> Result<Vec<i64>> {
        let Batch {
            tasks,
            requires_json,
            lane_keys,
            lane_of,
            retry_texts,
        } = batch;
        let tasks: &[NewTask] = tasks;
        {
            let now = now_ms();
            let (race, mut floor) = read_insert_meta(tx)?;
            let mut ids = Vec::with_capacity(tasks.len());
            // Whether each task was inserted (not found by its key), for its dependencies.
            let mut fresh = Vec::with_capacity(tasks.len());
            let mut insert = tx.prepare_cached(&INSERT_ONE)?;
            let mut insert_keyed = tx.prepare_cached(&INSERT_KEYED)?;
            let lane_ids = lane_keys
                .iter()
                .map(|k| self.lane_id_in(tx, k, new_lanes))
                .collect::<Result<Vec<i64>>>()?;
            // What a row needs beyond the task itself: its lane, due time and race key.
            let place = |i: usize| -> Result<(i64, i64, f64)> {
                let t = &tasks[i];
                let lane_id = lane_ids[lane_of[i]];
                let run_after = match (t.run_after, t.delay_ms) {
                    (Some(at), _) => at,
                    (None, Some(d)) => crate::model::time::later("delay", now, d)?,
                    (None, None) => now,
                };
                Ok((lane_id, run_after, race.key(t.priority)))
            };
            // Whether task j can share a uniform statement with task `i` (see `insert_uniform_sql`).
            let like = |i: usize, j: usize| {
                let (a, t) = (&tasks[i], &tasks[j]);
                lane_of[j] == lane_of[i]
                    && t.priority == a.priority
                    && t.max_attempts == a.max_attempts
                    && requires_json[j].is_none()
                    && t.timeout_ms.is_none()
                    && retry_texts[j].is_none()
            };
            let n = ROWS_PER_INSERT;
            let mut i = 0;
            while i < tasks.len() {
                // Tasks without a key go n at a time through one multi-row INSERT (once any id
                // floor is placed): each execution of a statement opens and closes a cursor on the
                // table and every index, which the rows of one execution share. A run of like
                // tasks takes the uniform statement, others the general one.
                if floor.0.is_none()
                    && i + n <= tasks.len()
                    && tasks[i..i + n].iter().all(|t| t.idempotency_key.is_none())
                {
                    let placed = (i..i + n).map(place).collect::<Result<Vec<_>>>()?;
                    let run = Run {
                        tasks: &tasks[i..i + n],
                        placed: &placed,
                        requires_json: &requires_json[i..i + n],
                        retry_texts: &retry_texts[i..i + n],
                    };
                    insert_run(tx, &run, &now, (i..i + n).all(|j| like(i, j)))?;
                    // Rows inserted without a rowid get the largest rowid plus one, in order, and
                    // this transaction holds the write lock: the ids are consecutive.
                    let last = tx.last_insert_rowid();
                    ids.extend(last - n as i64 + 1..=last);
                    fresh.resize(ids.len(), true);
                    i += n;
                    continue;
                }
                let t = &tasks[i];
                let placed = place(i)?;
                let row = row_params(t, &placed, &now, &requires_json[i], &retry_texts[i]);
                let (id, new) = match &t.idempotency_key {
                    None => {
                        insert.execute(&row[..])?;
                        (floor.place(tx, tx.last_insert_rowid())?, true)
                    }
                    Some(key) => {
                        let keyed = row.into_iter().chain([key as &dyn ToSql]);
                        if insert_keyed.execute(params_from_iter(keyed))? == 1 {
                            (floor.place(tx, tx.last_insert_rowid())?, true)
                        } else {
                            let id = tx
                                .prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?1")?
                                .query_row([key], |r| r.get(0))?;
                            (id, false)
                        }
                    }
                };
                ids.push(id);
                fresh.push(new);
                i += 1;
            }
            if tasks.iter().any(|t| !t.after.is_empty()) {
                dependencies::hold_new(tx, tasks, &ids, &fresh, now)?;
            }
            Ok(ids)
        }
    }
}

/// A batch of tasks with what its inserts need computed once, outside the transaction (which
/// may run more than once): `requires` as stored (JSON text as given, or NULL when empty), the
/// distinct lanes and each task's, and the retry policies as JSON text.
pub(crate) struct Batch<'a> {
    tasks: &'a [NewTask],
    requires_json: Vec<Option<String>>,
    lane_keys: Vec<LaneKey>,
    lane_of: Vec<usize>,
    retry_texts: Vec<Option<String>>,
}

impl<'a> Batch<'a> {
    pub(crate) fn of(tasks: &'a [NewTask]) -> Batch<'a> {
        let requires_json: Vec<Option<String>> = tasks
            .iter()
            .map(|t| requires_as_given(&t.requires))
            .collect();
        let (lane_keys, lane_of) = batch_lanes(tasks, &requires_json);
        let retry_texts: Vec<Option<String>> = tasks
            .iter()
            .map(|t| {
                t.retry
                    .filter(|r| !r.is_empty())
                    .map(|r| serde_json::to_string(&r).unwrap())
            })
            .collect();
        Batch {
            tasks,
            requires_json,
            lane_keys,
            lane_of,
            retry_texts,
        }
    }
}

/// The distinct lanes of a batch, and each task's lane as an index into them. A batch usually
/// holds runs of tasks of one queue and type, so a task like the one before it costs a
/// comparison, not a key of three strings to build and hash.
fn batch_lanes(tasks: &[NewTask], requires_json: &[Option<String>]) -> (Vec<LaneKey>, Vec<usize>) {
    let mut lane_keys: Vec<LaneKey> = Vec::new();
    let mut lane_of: Vec<usize> = Vec::with_capacity(tasks.len());
    for (t, given) in tasks.iter().zip(requires_json) {
        // `requires` as stored is the JSON text as given; its canonical text is the lane key's.
        let canonical = given.as_ref().map(|_| requires_text(&t.requires));
        let requires = canonical.as_deref().unwrap_or("");
        let same = lane_keys
            .last()
            .is_some_and(|(q, ty, r)| *q == t.queue && *ty == t.task_type && r == requires);
        if !same {
            lane_keys.push((t.queue.clone(), t.task_type.clone(), requires.to_string()));
        }
        lane_of.push(lane_keys.len() - 1);
    }
    (lane_keys, lane_of)
}

/// `ROWS_PER_INSERT` tasks without idempotency keys, with what each row needs beyond the task
/// (lane, due time, race key) and their stored `requires` and retry texts.
struct Run<'a> {
    tasks: &'a [NewTask],
    placed: &'a [(i64, i64, f64)],
    requires_json: &'a [Option<String>],
    retry_texts: &'a [Option<String>],
}

/// Insert a run with one multi-row statement: the uniform one when every task is like the first
/// (one lane, priority and attempt limit, nothing else set), the general one otherwise.
fn insert_run(tx: &WriteTx, run: &Run, now: &i64, uniform: bool) -> Result<()> {
    let (sql, args): (&str, Vec<&dyn ToSql>) = if uniform {
        let t = &run.tasks[0];
        let shared: [&dyn ToSql; 6] = [
            &run.placed[0].0,
            &t.task_type,
            &t.queue,
            &t.priority,
            &t.max_attempts,
            now,
        ];
        let rows = run.tasks.iter().zip(run.placed).flat_map(
            |(t, (_, run_after, wkey))| -> [&dyn ToSql; 3] { [&t.payload, run_after, wkey] },
        );
        (&INSERT_UNIFORM, shared.into_iter().chain(rows).collect())
    } else {
        let rows = (0..run.tasks.len()).flat_map(|j| {
            row_params(
                &run.tasks[j],
                &run.placed[j],
                now,
                &run.requires_json[j],
                &run.retry_texts[j],
            )
        });
        (&INSERT_ROWS, rows.collect())
    };
    tx.prepare_cached(sql)?.execute(&*args)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::testutil::file_driver;

    #[test]
    fn idempotency_key_returns_the_existing_task() {
        let (_d, q) = file_driver();
        let mut t = NewTask::new("x", "1");
        t.idempotency_key = Some("k".into());
        let a = q.enqueue(&t).unwrap();
        let ids = q.enqueue_many(&[t.clone(), t.clone()]).unwrap();
        assert_eq!(ids, vec![a, a]);
        assert_eq!(q.stats(None).unwrap().total, 1);
    }

    #[test]
    fn a_row_the_database_refuses_mid_batch_writes_nothing() {
        // The multi-row INSERT runs OR FAIL (no statement journal): the rows before the refused
        // one stay in the transaction, which must then roll back as a whole.
        let (_d, q) = file_driver();
        q.db.write(|tx| Ok(tx.execute_batch("CREATE UNIQUE INDEX only_once ON tasks (payload)")?))
            .unwrap();
        let mut tasks: Vec<NewTask> = (0..2 * ROWS_PER_INSERT + 5)
            .map(|i| NewTask::new("x", i.to_string()))
            .collect();
        tasks[ROWS_PER_INSERT + 7].payload = "3".into();
        let e = q.enqueue_many(&tasks).unwrap_err().to_string();
        assert!(e.contains("UNIQUE"), "{e}");
        assert_eq!(q.stats(None).unwrap().total, 0);
        tasks[ROWS_PER_INSERT + 7].payload = "\"fine\"".into();
        let ids = q.enqueue_many(&tasks).unwrap();
        assert_eq!(ids.len(), tasks.len());
        assert_eq!(q.stats(None).unwrap().total, tasks.len() as i64);
    }

    #[test]
    fn every_insert_form_stores_what_each_task_says() {
        // Runs of like tasks take the uniform statement, others the general multi-row one or
        // one row at a time: a batch that mixes them must store every task as given.
        let (_d, q) = file_driver();
        let n = 5 * ROWS_PER_INSERT + 3;
        let tasks: Vec<NewTask> = (0..n)
            .map(|i| {
                let mut t = NewTask::new(if i < 70 { "a" } else { "b" }, i.to_string());
                t.priority = if (100..110).contains(&i) { 7 } else { 100 };
                if i == 40 {
                    t.max_attempts = 2;
                }
                if i == 140 {
                    t.requires = Some(serde_json::from_str(r#"{"gpu": true}"#).unwrap());
                }
                if i == 150 {
                    t.timeout_ms = Some(1500);
                }
                if i == 20 {
                    t.delay_ms = Some(60_000);
                }
                t
            })
            .collect();
        let ids = q.enqueue_many(&tasks).unwrap();
        assert_eq!(ids.len(), n);
        for (want, id) in tasks.iter().zip(&ids) {
            let got = q.get(*id).unwrap();
            assert_eq!(
                (&got.task_type, &got.payload, got.priority, got.max_attempts),
                (
                    &want.task_type,
                    &want.payload,
                    want.priority,
                    want.max_attempts
                )
            );
            assert_eq!(got.timeout_ms, want.timeout_ms);
            assert_eq!(got.requires.is_some(), want.requires.is_some());
            assert_eq!(got.run_after > got.created_at, want.delay_ms.is_some());
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let cases: Vec<(NewTask, &str)> = vec![
            (NewTask::new("", "1"), "type must be a non-empty string"),
            (
                {
                    let mut t = NewTask::new("x", "1");
                    t.priority = 1001;
                    t
                },
                "priority must be between 1",
            ),
            (
                {
                    let mut t = NewTask::new("x", "1");
                    t.delay_ms = Some(-1);
                    t
                },
                "delay must be zero or positive",
            ),
            (
                {
                    let mut t = NewTask::new("x", "1");
                    t.max_attempts = 0;
                    t
                },
                "max_attempts must be at least 1",
            ),
            (
                NewTask::new("x", "x".repeat(100)),
                "above the limit of 10 bytes",
            ),
        ];
        for (t, want) in cases {
            let e = t.validate(10).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }
}
