//! Issue 6: property tests through the real server. After any sequence of
//! adds (appended or inserted), deletes and reorders, a template's steps have
//! `stepOrder` 0..n in list order and sit in the order the operations imply.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use workflows_tests::TestApp;

use crate::{create_drive, create_template, echo, steps_of};

#[derive(Debug, Clone)]
enum Op {
    /// Append (None) or insert at `at % (len + 1)`.
    Add(Option<usize>),
    Delete(usize),
    /// A permutation chosen by this seed.
    Reorder(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<Option<u8>>().prop_map(|at| Op::Add(at.map(usize::from))),
        any::<u8>().prop_map(|i| Op::Delete(usize::from(i))),
        any::<u64>().prop_map(Op::Reorder),
    ]
}

/// A deterministic shuffle (Fisher–Yates over a small LCG).
fn permutation(n: usize, mut seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        p.swap(i, j);
    }
    p
}

#[test]
fn step_orders_stay_contiguous_after_any_changes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, token, drive) = rt.block_on(async {
        let app = TestApp::spawn().await;
        let token = app.user("prop").await;
        let drive = create_drive(&app, &token, "Props").await;
        (app, token, drive)
    });
    let mut runner = TestRunner::new(Config {
        cases: 24,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..14), |ops| {
        rt.block_on(async {
            let t = create_template(&app, &token, &drive, json!({"name": "P", "steps": [echo("s0")]})).await;
            let template = t["id"].as_str().unwrap().to_owned();
            let mut model = vec!["s0".to_owned()];
            for (n, op) in ops.iter().enumerate() {
                let steps = steps_of(&app, &token, &template).await;
                match op {
                    Op::Add(at) => {
                        let label = format!("s{}", n + 1);
                        let at = at.map(|a| a % (model.len() + 1));
                        app.ok(
                            &token,
                            "mutation($t: ID!, $i: WorkflowStepInput!, $o: Int) { addWorkflowStep(templateId: $t, input: $i, stepOrder: $o) { stepOrder } }",
                            json!({"t": template, "i": echo(&label), "o": at}),
                        )
                        .await;
                        model.insert(at.unwrap_or(model.len()), label);
                    }
                    Op::Delete(i) if !model.is_empty() => {
                        let i = i % model.len();
                        app.ok(&token, "mutation($s: ID!) { deleteWorkflowStep(id: $s) }", json!({"s": steps[i].0}))
                            .await;
                        model.remove(i);
                    }
                    Op::Delete(_) => {}
                    Op::Reorder(seed) => {
                        let p = permutation(model.len(), *seed);
                        let ids: Vec<&str> = p.iter().map(|&i| steps[i].0.as_str()).collect();
                        app.ok(
                            &token,
                            "mutation($t: ID!, $s: [ID!]!) { reorderWorkflowSteps(templateId: $t, stepIds: $s) { id } }",
                            json!({"t": template, "s": ids}),
                        )
                        .await;
                        model = p.iter().map(|&i| model[i].clone()).collect();
                    }
                }
                // steps_of asserts stepOrder is 0..n in list order.
                let now: Vec<String> = steps_of(&app, &token, &template).await.into_iter().map(|(_, p)| p).collect();
                assert_eq!(now, model, "after {:?}", &ops[..=n]);
            }
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
