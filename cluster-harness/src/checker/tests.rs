//! Scenarios. Times are in nanoseconds; `put(1, "a", 0, 10)` is client 1 putting "a" on key "x",
//! invoked at 0 and completed at 10.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::*;

const BUDGET: Duration = Duration::from_secs(10);

fn operation(client: u64, input: Input, invoked_ns: u64, completed_ns: u64, output: Output) -> Operation {
    Operation {
        client,
        key: b"x".to_vec(),
        input,
        invoked_ns,
        outcome: Outcome::Completed { at_ns: completed_ns, output },
        served: None,
    }
}

fn put(client: u64, value: &str, invoked_ns: u64, completed_ns: u64) -> Operation {
    operation(client, Input::Put(value.into()), invoked_ns, completed_ns, Output::Ok)
}

fn delete(client: u64, invoked_ns: u64, completed_ns: u64) -> Operation {
    operation(client, Input::Delete, invoked_ns, completed_ns, Output::Ok)
}

fn get(client: u64, seen: Option<&str>, invoked_ns: u64, completed_ns: u64) -> Operation {
    operation(client, Input::Get, invoked_ns, completed_ns, Output::Value(seen.map(Into::into)))
}

fn cas(client: u64, expected: Option<&str>, new: &str, stored: bool, invoked_ns: u64, completed_ns: u64) -> Operation {
    let input = Input::CompareAndPut { expected: expected.map(Into::into), new: new.into() };
    operation(client, input, invoked_ns, completed_ns, Output::Cas(stored))
}

/// The operation, but the client gave up waiting for it.
fn unknown(operation: Operation) -> Operation {
    Operation { outcome: Outcome::Unknown, ..operation }
}

/// The operation, on `key` instead of "x".
fn on(key: &str, operation: Operation) -> Operation {
    Operation { key: key.into(), ..operation }
}

fn checked(history: &[Operation]) -> Report {
    check(history, BUDGET).expect("the history is well-formed")
}

fn verdict(history: &[Operation]) -> Verdict {
    checked(history).verdict
}

// Histories that must be rejected.

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    let history = [put(1, "1", 0, 10), put(1, "2", 20, 30), get(2, Some("1"), 40, 50)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn read_overlapping_the_overwriting_write_may_still_see_the_old_value() {
    let history = [put(1, "1", 0, 10), put(1, "2", 20, 45), get(2, Some("1"), 40, 50)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn reads_observing_concurrent_writes_in_opposite_orders_are_rejected() {
    // Both writes span the reads. Client 3 sees 1 then 2, so 1 was written first; client 4 then
    // sees 2 and, after it, 1 again, which needs 1 to be written after 2.
    let writes = [put(1, "1", 0, 100), put(2, "2", 0, 100)];
    let first_reader = [get(3, Some("1"), 10, 20), get(3, Some("2"), 50, 60)];
    let second_reader = [get(4, Some("2"), 30, 40), get(4, Some("1"), 70, 80)];
    let history: Vec<Operation> = writes.into_iter().chain(first_reader).chain(second_reader).collect();
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn reads_observing_concurrent_writes_in_the_same_order_are_accepted() {
    let writes = [put(1, "1", 0, 100), put(2, "2", 0, 100)];
    let first_reader = [get(3, Some("1"), 10, 20), get(3, Some("2"), 50, 60)];
    let second_reader = [get(4, Some("2"), 30, 40), get(4, Some("2"), 70, 80)];
    let history: Vec<Operation> = writes.into_iter().chain(first_reader).chain(second_reader).collect();
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn lost_acknowledged_write_is_rejected() {
    let history = [put(1, "1", 0, 10), get(2, None, 20, 30)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn lost_acknowledged_overwrite_is_rejected() {
    let history = [put(1, "1", 0, 10), put(2, "2", 20, 30), get(3, Some("2"), 40, 50), get(3, Some("1"), 60, 70)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn read_of_a_deleted_value_is_rejected() {
    let history = [put(1, "1", 0, 10), delete(1, 20, 30), get(2, Some("1"), 40, 50)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn read_of_a_value_written_only_after_it_completed_is_rejected() {
    let history = [get(1, Some("1"), 0, 10), put(2, "1", 20, 30)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let history = [put(1, "1", 0, 10), get(2, Some("ghost"), 0, 30)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn compare_and_put_succeeding_against_the_wrong_value_is_rejected() {
    let history = [put(1, "a", 0, 10), cas(2, Some("b"), "c", true, 20, 30)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn compare_and_put_expecting_absent_succeeding_on_a_present_key_is_rejected() {
    let history = [put(1, "a", 0, 10), cas(2, None, "c", true, 20, 30)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn compare_and_put_failing_against_the_right_value_is_rejected() {
    let history = [put(1, "a", 0, 10), cas(2, Some("a"), "c", false, 20, 30)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn two_compare_and_puts_expecting_the_same_value_cannot_both_succeed() {
    let history = [put(1, "a", 0, 10), cas(2, Some("a"), "b", true, 20, 50), cas(3, Some("a"), "c", true, 20, 50)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_cannot_take_effect_before_it_was_invoked() {
    let history = [put(1, "1", 0, 10), get(2, Some("2"), 20, 30), unknown(put(3, "2", 40, 0))];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

// Histories that must be accepted.

#[test]
fn empty_history_is_linearizable() {
    let report = checked(&[]);
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(report.keys.is_empty());
}

#[test]
fn read_of_a_key_never_written_sees_it_absent() {
    assert_eq!(verdict(&[get(1, None, 0, 10)]), Verdict::Linearizable);
    assert_eq!(verdict(&[get(1, Some(""), 0, 10)]), Verdict::NotLinearizable);
}

#[test]
fn read_overlapping_a_write_may_see_either_value() {
    let before = put(1, "old", 0, 10);
    let write = put(1, "new", 20, 50);
    for seen in ["old", "new"] {
        let history = [before.clone(), write.clone(), get(2, Some(seen), 30, 40)];
        assert_eq!(verdict(&history), Verdict::Linearizable, "reading {seen}");
    }
    let history = [before, write, get(2, None, 30, 40)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable, "reading absent");
}

#[test]
fn operations_whose_intervals_touch_count_as_concurrent() {
    let history = [put(1, "1", 0, 10), put(1, "2", 10, 20), get(2, Some("1"), 20, 30)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_observed_by_a_later_read_is_accepted() {
    let history = [
        put(1, "1", 0, 10),
        unknown(put(1, "2", 20, 0)),
        get(2, Some("1"), 30, 40),
        get(2, Some("2"), 1_000, 1_010),
        get(3, Some("2"), 2_000, 2_010),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_never_observed_is_accepted() {
    let history = [
        put(1, "1", 0, 10),
        unknown(put(1, "2", 20, 0)),
        get(2, Some("1"), 1_000, 1_010),
        get(2, Some("1"), 2_000, 2_010),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_observed_then_unobserved_is_rejected() {
    // Once a completed read has seen it, it took effect; it cannot be undone without a write.
    let history = [
        put(1, "1", 0, 10),
        unknown(put(1, "2", 20, 0)),
        get(2, Some("2"), 1_000, 1_010),
        get(2, Some("1"), 2_000, 2_010),
    ];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn unknown_delete_explains_a_later_absent_read() {
    let history = [put(1, "1", 0, 10), unknown(delete(1, 20, 0)), get(2, None, 1_000, 1_010)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_compare_and_put_may_or_may_not_have_stored() {
    let stored = [put(1, "a", 0, 10), unknown(cas(1, Some("a"), "b", false, 20, 0)), get(2, Some("b"), 1_000, 1_010)];
    assert_eq!(verdict(&stored), Verdict::Linearizable);
    let not_stored =
        [put(1, "a", 0, 10), unknown(cas(1, Some("a"), "b", false, 20, 0)), get(2, Some("a"), 1_000, 1_010)];
    assert_eq!(verdict(&not_stored), Verdict::Linearizable);
}

#[test]
fn unknown_compare_and_put_cannot_store_against_the_wrong_value() {
    let history = [put(1, "a", 0, 10), unknown(cas(1, Some("z"), "b", false, 20, 0)), get(2, Some("b"), 1_000, 1_010)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn unknown_read_constrains_nothing() {
    let history = [put(1, "1", 0, 10), unknown(get(2, Some("never written"), 20, 0)), get(3, Some("1"), 30, 40)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn unknown_write_explains_a_failed_compare_and_put() {
    // Nothing reads "b", but the compare-and-put can only have failed if "b" was written first.
    let history = [put(1, "a", 0, 10), unknown(put(2, "b", 20, 0)), cas(3, Some("a"), "c", false, 100, 110)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn each_unknown_write_explains_at_most_one_failed_compare_and_put() {
    let failures = [
        put(1, "a", 0, 10),
        cas(3, Some("a"), "c", false, 100, 110),
        put(1, "a", 200, 210),
        cas(3, Some("a"), "c", false, 300, 310),
    ];
    let one_timeout: Vec<Operation> = failures.iter().cloned().chain([unknown(put(2, "x", 20, 0))]).collect();
    assert_eq!(verdict(&one_timeout), Verdict::NotLinearizable);
    let two_timeouts: Vec<Operation> = one_timeout.iter().cloned().chain([unknown(put(4, "y", 20, 0))]).collect();
    assert_eq!(verdict(&two_timeouts), Verdict::Linearizable);
}

#[test]
fn failed_compare_and_put_consistent_with_a_concurrent_write_is_accepted() {
    let history =
        [put(1, "a", 0, 10), put(2, "b", 20, 60), cas(3, Some("a"), "c", false, 30, 50), get(3, Some("b"), 70, 80)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn failed_compare_and_put_before_the_write_that_would_explain_it_is_rejected() {
    let history = [put(1, "a", 0, 10), cas(3, Some("a"), "c", false, 20, 30), put(2, "b", 40, 50)];
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

#[test]
fn compare_and_put_chain_is_accepted() {
    let history = [
        cas(1, None, "1", true, 0, 10),
        cas(2, None, "2", false, 5, 15),
        cas(2, Some("1"), "2", true, 20, 30),
        cas(1, Some("1"), "3", false, 25, 35),
        get(3, Some("2"), 40, 50),
    ];
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

// Keys.

#[test]
fn history_over_several_keys_is_split_per_key() {
    let history = [
        on("x", put(1, "1", 0, 10)),
        on("y", put(2, "1", 0, 10)),
        on("z", put(3, "1", 0, 10)),
        on("x", put(1, "2", 20, 30)),
        on("y", put(2, "2", 20, 30)),
        // A read on "x" of another key's write would be a violation if keys were not separated.
        on("x", get(3, Some("2"), 40, 50)),
        on("y", get(3, Some("1"), 40, 50)),
        on("z", get(1, Some("1"), 40, 50)),
    ];
    let report = checked(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let keys: Vec<(&[u8], usize, Verdict)> =
        report.keys.iter().map(|key| (key.key.as_slice(), key.operations, key.verdict)).collect();
    let expected: Vec<(&[u8], usize, Verdict)> =
        vec![(b"x", 3, Verdict::Linearizable), (b"y", 3, Verdict::NotLinearizable), (b"z", 2, Verdict::Linearizable)];
    assert_eq!(keys, expected);
    for linearizable in [b"x", b"z"] {
        let key = report.key(linearizable).expect("reported");
        assert_eq!((&key.explanation, &key.violation), (&None, &None));
    }
    let violation = report.key(b"y").and_then(|key| key.violation.as_ref()).expect("a violation on y");
    assert_eq!(violation.linearized, vec![1, 4]);
    assert_eq!(violation.register.as_deref(), Some(&b"2"[..]));
    assert_eq!(violation.unplaceable, vec![6]);
}

#[test]
fn explanation_names_the_prefix_the_register_and_the_unplaceable_operations() {
    let history = [put(1, "1", 0, 10), put(1, "2", 20, 30), get(2, Some("1"), 40, 50)];
    let report = checked(&history);
    let key = report.key(b"x").expect("reported");
    let explanation = key.explanation.as_deref().expect("explained");
    let expected = "the longest linearizable prefix found has 2 operations:\n  \
                    #0 client 1: put \"1\" on \"x\" -> ok, invoked at 0 ns, completed at 10 ns\n  \
                    #1 client 1: put \"2\" on \"x\" -> ok, invoked at 20 ns, completed at 30 ns\n\
                    after which the key holds \"2\", and none of these operations can come next:\n  \
                    #2 client 2: get on \"x\" -> \"1\", invoked at 40 ns, completed at 50 ns";
    assert_eq!(explanation, expected);
    assert!(report.to_string().starts_with("not linearizable (1 keys)\nkey \"x\" (3 operations): not linearizable: "));
}

#[test]
fn binary_values_are_explained_in_hex() {
    let mut read = get(2, None, 20, 30);
    read.outcome = Outcome::Completed { at_ns: 30, output: Output::Value(Some(vec![0, 255])) };
    let report = checked(&[put(1, "1", 0, 10), read]);
    let explanation = report.keys[0].explanation.as_deref().expect("explained");
    assert!(explanation.contains("get on \"x\" -> 0x00ff"), "{explanation}");
}

// Malformed histories.

#[test]
fn operation_completing_before_it_was_invoked_is_an_error() {
    let error = check(&[put(1, "1", 0, 10), put(1, "2", 20, 19)], BUDGET).expect_err("malformed");
    assert_eq!(error, HistoryError::CompletedBeforeInvoked { index: 1, invoked_ns: 20, completed_ns: 19 });
}

#[test]
fn output_of_the_wrong_kind_is_an_error() {
    let history = [put(1, "1", 0, 10), operation(2, Input::Get, 20, 30, Output::Ok)];
    let error = check(&history, BUDGET).expect_err("malformed");
    assert_eq!(error, HistoryError::OutputDoesNotFitInput { index: 1, input: "get", output: "ok" });
    assert_eq!(error.to_string(), "operation #1 is a get but its output is ok");
}

// Budget and scale.

#[test]
fn exhausted_budget_makes_the_check_inconclusive() {
    let history = [put(1, "1", 0, 10), get(2, Some("1"), 20, 30)];
    let report = check(&history, Duration::ZERO).expect("well-formed");
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert_eq!(report.keys[0].explanation.as_deref(), Some("the time budget ran out before the search finished"));
}

#[test]
fn pathological_history_gives_up_when_the_budget_runs_out() {
    // Thirty writes and thirty reads all concurrent, one read seeing a value nobody wrote: the
    // search must rule out every order before it can reject the history.
    let mut history: Vec<Operation> = (0..30).map(|n| put(n, &n.to_string(), 0, 1_000)).collect();
    history.extend((0..30).map(|n| get(100 + n, Some(&n.to_string()), 0, 1_000)));
    history.push(get(200, Some("ghost"), 0, 1_000));
    let budget = Duration::from_millis(200);
    let started = Instant::now();
    let report = check(&history, budget).expect("well-formed");
    let elapsed = started.elapsed();
    assert_eq!(report.verdict, Verdict::Inconclusive);
    assert!(elapsed < budget + Duration::from_millis(500), "took {elapsed:?}");
}

#[test]
fn unobserved_unknown_writes_do_not_slow_the_search_down() {
    // Each unknown write is concurrent with everything after it; if the search tried placing
    // them everywhere, this would take forever.
    let mut history = Vec::new();
    for n in 0..300 {
        let start = n * 100;
        history.push(put(1, &format!("known {n}"), start, start + 10));
        history.push(unknown(put(2, &format!("lost {n}"), start + 20, 0)));
        history.push(get(3, Some(&format!("known {n}")), start + 50, start + 60));
    }
    let started = Instant::now();
    assert_eq!(verdict(&history), Verdict::Linearizable);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

/// A small deterministic pseudo-random generator (xorshift64*), so tests need no dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What happens to a generated operation.
enum Fate {
    Completes,
    /// The client times out, but the operation took effect.
    TimesOutApplied,
    /// The client times out, and the operation never took effect.
    TimesOutLost,
}

/// A history of `count` operations by `clients` clients on key "x", made by applying random
/// operations one at a time to a real register at increasing instants (their linearization
/// points) and recording each with a random interval around its instant that does not overlap
/// the same client's previous operation. It is linearizable by construction. `unknown_percent`
/// of the operations time out, half of those without taking effect.
fn sequentially_generated_history(seed: u64, clients: u64, count: usize, unknown_percent: u64) -> Vec<Operation> {
    let mut random = Random(seed);
    let mut register: Option<Vec<u8>> = None;
    let mut client_free_at = vec![0; usize::try_from(clients).expect("few clients")];
    let mut history = Vec::with_capacity(count);
    let mut instant: u64 = 1_000;
    while history.len() < count {
        instant += 1 + random.below(100);
        let client = random.below(clients);
        let free_at = &mut client_free_at[usize::try_from(client).expect("few clients")];
        if *free_at >= instant {
            continue;
        }
        let invoked_ns = instant - random.below((instant - *free_at).min(300));
        let completed_ns = instant + random.below(300);
        *free_at = completed_ns;
        let input = random_input(&mut random, &register, history.len());
        let fate = match random.percent(unknown_percent) {
            false => Fate::Completes,
            true if random.percent(50) => Fate::TimesOutApplied,
            true => Fate::TimesOutLost,
        };
        let outcome = match fate {
            Fate::Completes => Outcome::Completed { at_ns: completed_ns, output: apply(&mut register, &input) },
            Fate::TimesOutApplied => {
                apply(&mut register, &input);
                Outcome::Unknown
            }
            Fate::TimesOutLost => Outcome::Unknown,
        };
        history.push(Operation { client, key: b"x".to_vec(), input, invoked_ns, outcome, served: None });
    }
    history
}

/// A random operation; every written value is new.
fn random_input(random: &mut Random, register: &Option<Vec<u8>>, serial: usize) -> Input {
    let fresh = format!("v{serial}").into_bytes();
    match random.below(100) {
        0..=34 => Input::Put(fresh),
        35..=69 => Input::Get,
        70..=79 => Input::Delete,
        _ => {
            let expected = match random.below(3) {
                0 => register.clone(),
                1 => None,
                _ => Some(format!("v{}", random.below(serial as u64 + 1)).into_bytes()),
            };
            Input::CompareAndPut { expected, new: fresh }
        }
    }
}

/// The reference register: applies `input` and returns its output.
fn apply(register: &mut Option<Vec<u8>>, input: &Input) -> Output {
    match input {
        Input::Put(value) => {
            *register = Some(value.clone());
            Output::Ok
        }
        Input::Delete => {
            *register = None;
            Output::Ok
        }
        Input::Get => Output::Value(register.clone()),
        Input::CompareAndPut { expected, new } => {
            let stores = register == expected;
            if stores {
                *register = Some(new.clone());
            }
            Output::Cas(stores)
        }
    }
}

fn completed_ns(operation: &Operation) -> u64 {
    match operation.outcome {
        Outcome::Completed { at_ns, .. } => at_ns,
        Outcome::Unknown => u64::MAX,
    }
}

#[test]
fn large_sequentially_generated_history_is_accepted_within_the_budget() {
    let history = sequentially_generated_history(0x5eed, 5, 2_000, 0);
    let started = Instant::now();
    let report = checked(&history);
    eprintln!("checked {} operations in {:?}", history.len(), started.elapsed());
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

#[test]
fn large_sequentially_generated_histories_with_timeouts_are_accepted() {
    for seed in 1..=5 {
        let history = sequentially_generated_history(seed, 5, 2_000, 5 * seed);
        let started = Instant::now();
        let report = checked(&history);
        eprintln!("seed {seed}: checked {} operations in {:?}", history.len(), started.elapsed());
        assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}: {report}");
    }
}

#[test]
fn large_history_with_timeouts_and_one_impossible_read_is_rejected() {
    let mut history = sequentially_generated_history(2, 5, 2_000, 1);
    let read = (1_000..history.len())
        .find(|&index| matches!(history[index].outcome, Outcome::Completed { output: Output::Value(_), .. }))
        .expect("a completed read");
    history[read].outcome =
        Outcome::Completed { at_ns: completed_ns(&history[read]), output: Output::Value(Some(b"ghost".to_vec())) };
    let unknown = history[..read].iter().filter(|operation| operation.outcome == Outcome::Unknown).count();
    let started = Instant::now();
    let report = checked(&history);
    eprintln!("rejected {} operations, {unknown} unknown before the read, in {:?}", history.len(), started.elapsed());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let violation = report.keys[0].violation.as_ref().expect("a violation");
    assert!(violation.unplaceable.contains(&read), "{report}");
}

#[test]
fn large_history_with_one_stale_read_is_rejected_and_the_read_named() {
    let mut history = sequentially_generated_history(0x5eed, 5, 2_000, 0);
    // A put, a later write that completed before a read in the middle was invoked, and that
    // read changed to return the put's value: with every value written once, it is stale.
    let is_write = |operation: &Operation| matches!(operation.input, Input::Put(_) | Input::Delete);
    let first_put = history.iter().position(|operation| matches!(operation.input, Input::Put(_))).expect("a put");
    let overwrite = (first_put + 1..history.len())
        .find(|&index| is_write(&history[index]) && history[index].invoked_ns > completed_ns(&history[first_put]))
        .expect("an overwrite");
    let stale_read = (1_000..history.len())
        .find(|&index| {
            history[index].input == Input::Get && history[index].invoked_ns > completed_ns(&history[overwrite])
        })
        .expect("a read");
    let Input::Put(stale_value) = history[first_put].input.clone() else { unreachable!("found a put") };
    history[stale_read].outcome =
        Outcome::Completed { at_ns: completed_ns(&history[stale_read]), output: Output::Value(Some(stale_value)) };

    let started = Instant::now();
    let report = checked(&history);
    eprintln!("rejected {} operations in {:?}", history.len(), started.elapsed());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let violation = report.keys[0].violation.as_ref().expect("a violation");
    assert!(violation.unplaceable.contains(&stale_read), "{report}");
    assert!(violation.linearized.len() >= stale_read / 2, "{report}");
}

/// Whether `history` (on one key, at most 64 operations) is linearizable, by trying every order
/// and remembering the (remaining operations, register) pairs that led nowhere: a plain
/// reference search without the checker's refinements. Unknown operations may be placed
/// anywhere after their invocation or not at all; their output is ignored.
fn linearizable_by_exhaustive_search(history: &[Operation]) -> bool {
    type Dead = HashSet<(u64, Option<Vec<u8>>)>;
    fn extend(history: &[Operation], remaining: u64, register: &Option<Vec<u8>>, dead: &mut Dead) -> bool {
        let is_remaining = |index: usize| remaining & (1 << index) != 0;
        if (0..history.len())
            .filter(|&index| is_remaining(index))
            .all(|index| history[index].outcome == Outcome::Unknown)
        {
            return true;
        }
        if dead.contains(&(remaining, register.clone())) {
            return false;
        }
        for (index, candidate) in history.iter().enumerate().filter(|&(index, _)| is_remaining(index)) {
            let must_wait = (0..history.len())
                .any(|other| is_remaining(other) && completed_ns(&history[other]) < candidate.invoked_ns);
            let mut after = register.clone();
            let output = apply(&mut after, &candidate.input);
            let fits = match &candidate.outcome {
                Outcome::Completed { output: seen, .. } => *seen == output,
                Outcome::Unknown => true,
            };
            if !must_wait && fits && extend(history, remaining & !(1 << index), &after, dead) {
                return true;
            }
        }
        dead.insert((remaining, register.clone()));
        false
    }
    assert!(history.len() <= 64, "too long for the reference search");
    let all = if history.len() == 64 { u64::MAX } else { (1 << history.len()) - 1 };
    extend(history, all, &None, &mut HashSet::new())
}

fn expected_verdict(history: &[Operation]) -> Verdict {
    if linearizable_by_exhaustive_search(history) {
        Verdict::Linearizable
    } else {
        Verdict::NotLinearizable
    }
}

/// A small history of arbitrary operations with arbitrary outputs over few values: some are
/// linearizable, many are not.
fn arbitrary_small_history(random: &mut Random, count: usize) -> Vec<Operation> {
    let value = |random: &mut Random| ["a", "b", "c"][random.below(3) as usize].as_bytes().to_vec();
    (0..count)
        .map(|client| {
            let invoked_ns = random.below(100);
            let (input, output) = match random.below(4) {
                0 => (Input::Put(value(random)), Output::Ok),
                1 => (Input::Delete, Output::Ok),
                2 => (Input::Get, Output::Value(random.percent(75).then(|| value(random)))),
                _ => {
                    let expected = random.percent(75).then(|| value(random));
                    (Input::CompareAndPut { expected, new: value(random) }, Output::Cas(random.percent(50)))
                }
            };
            let outcome = match random.percent(20) {
                true => Outcome::Unknown,
                false => Outcome::Completed { at_ns: invoked_ns + random.below(50), output },
            };
            Operation { client: client as u64, key: b"x".to_vec(), input, invoked_ns, outcome, served: None }
        })
        .collect()
}

#[test]
fn agrees_with_exhaustive_search_on_small_arbitrary_histories() {
    let mut random = Random(0xb007);
    let mut linearizable = 0;
    for round in 0..3_000 {
        let history = arbitrary_small_history(&mut random, 2 + round % 6);
        let expected = expected_verdict(&history);
        let report = checked(&history);
        assert_eq!(report.verdict, expected, "round {round}: {history:#?}\n{report}");
        linearizable += usize::from(expected == Verdict::Linearizable);
    }
    eprintln!("{linearizable} of 3000 arbitrary histories were linearizable");
    assert!((300..2_700).contains(&linearizable), "{linearizable} linearizable: the test is not telling much");
}

/// Changes the output of one random completed get or compare-and-put, which often makes the
/// history not linearizable.
fn mutate_one_output(random: &mut Random, history: &mut [Operation]) {
    let observers: Vec<usize> = (0..history.len())
        .filter(|&index| {
            matches!(history[index].outcome, Outcome::Completed { output: Output::Value(_) | Output::Cas(_), .. })
        })
        .collect();
    let Some(&index) = observers.get(random.below(observers.len() as u64) as usize) else { return };
    if let Outcome::Completed { output, .. } = &mut history[index].outcome {
        match output {
            Output::Value(seen) => {
                let serial = random.below(index as u64 + 1);
                *seen = random.percent(80).then(|| format!("v{serial}").into_bytes());
            }
            Output::Cas(stored) => *stored = !*stored,
            Output::Ok => {}
        }
    }
}

#[test]
fn agrees_with_exhaustive_search_on_mutated_generated_histories() {
    let mut random = Random(0xfeed);
    let mut linearizable = 0;
    for round in 0..300 {
        let mut history = sequentially_generated_history(random.next(), 3 + round % 3, 30, 15);
        if round % 4 != 0 {
            mutate_one_output(&mut random, &mut history);
        }
        let expected = expected_verdict(&history);
        let report = checked(&history);
        assert_eq!(report.verdict, expected, "round {round}: {history:#?}\n{report}");
        linearizable += usize::from(expected == Verdict::Linearizable);
    }
    eprintln!("{linearizable} of 300 generated histories were linearizable");
    assert!((75..225).contains(&linearizable), "{linearizable} linearizable: the test is not telling much");
}
