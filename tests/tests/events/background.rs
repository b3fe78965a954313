//! The samples of a broadcast sent in the background: the backend's `"async": true`
//! broadcast, one of its parts as the broadcast function's own asynchronous invocation
//! delivers it, and the backend reading where it stands.

use super::*;
use lambda_http::RequestExt;
use wsbridge::handlers::broadcast::run_part;
use wsbridge::protocol::broadcast::Exclusions;
use wsbridge::shards::Shard;
use wsbridge::store::JobStore;
use wsbridge::store::jobs::Job;
use wsbridge::test_support::RecordingLauncher;

/// The id `broadcast-async.json` gives its message; the other two samples name it.
const BROADCAST_ID: &str = "list-123-archived";

/// More tabs on list 123, their ids spread over API Gateway's id space so that each part of
/// the broadcast has someone to send to (the samples' own connections all start with `L`).
const LIST_READERS: [&str; 3] = ["Ab3xQ9eYvHcCKAQ=", "d7KpQ2uWvHcCLBQ=", "t9RmX4zSvHcCMCQ="];

/// alice (the samples' connection) and bob on list:123, carol on board:7 only, and
/// [`LIST_READERS`] on list:123.
async fn list_store() -> MemoryStore {
    let store = subscribed_store().await;
    seed(&store, BOB_ON_LIST, "bob", &["list:123"]).await;
    seed(&store, CAROL_ON_BOARD, "carol", &["board:7"]).await;
    for (n, id) in LIST_READERS.iter().enumerate() {
        seed(&store, id, &format!("reader-{n}"), &["list:123"]).await;
    }
    store
}

/// Every connection on list:123.
fn list_123() -> BTreeSet<ConnectionId> {
    let mut all = ids(&LIST_READERS);
    all.extend(ids(&[CONNECTION_ID, BOB_ON_LIST]));
    all
}

/// The broadcast function on a sample, with a launcher the test can ask what it started.
async fn run_background(
    store: &MemoryStore,
    sender: &RecordingSender,
    launcher: &RecordingLauncher,
    name: &str,
) -> Response<Body> {
    let request = match SHARD_EVENTS.contains(&name) {
        true => shard_event(name),
        false => http_event(name),
    };
    let settings = Settings::default();
    broadcast::handle(
        &request,
        &settings.context(store, sender),
        &BroadcastConfig::default(),
        launcher,
    )
    .await
}

/// `broadcast-async.json` accepted: the job recorded, its parts started (not yet run).
async fn accepted(store: &MemoryStore) -> Job {
    let response = run_background(
        store,
        &RecordingSender::new(),
        &RecordingLauncher::new(),
        BROADCAST_ASYNC,
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{BROADCAST_ASYNC}");
    stored_job(store).await
}

async fn stored_job(store: &MemoryStore) -> Job {
    store
        .job(BROADCAST_ID)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no job {BROADCAST_ID}"))
}

/// Who the posts went to, each post's envelope checked to be the archived message.
fn recipients(sender: &RecordingSender) -> Vec<ConnectionId> {
    sender
        .posts()
        .into_iter()
        .map(|post| {
            let envelope: Value = serde_json::from_slice(&post.payload).unwrap();
            assert_eq!(envelope["id"], BROADCAST_ID, "{envelope}");
            assert_eq!(envelope["event"], "list.archived", "{envelope}");
            post.connection_id
        })
        .collect()
}

#[tokio::test]
async fn broadcast_async_records_the_job_starts_four_parts_and_answers_202() {
    // GIVEN five connections on list:123 and carol on board:7
    let store = list_store().await;
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());

    // WHEN the backend archives the list with "async": true
    let response = run_background(&store, &sender, &launcher, BROADCAST_ASYNC).await;

    // THEN it is accepted at once, nothing sent yet, with where to follow it
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        http_json(&response),
        json!({
            "id": BROADCAST_ID, "status": "running",
            "recipients": 0, "delivered": 0, "gone": 0, "failed": 0, "retries": 0,
            "deadline_reached": false, "store_failed": false,
            "status_url": format!("/broadcasts/{BROADCAST_ID}"), "shards": 4
        })
    );
    assert!(sender.posts().is_empty());
    // AND each of its four parts was started once
    let started: Vec<u32> = launcher
        .launched()
        .into_iter()
        .inspect(|shard| assert_eq!(shard.broadcast_id, BROADCAST_ID))
        .map(|shard| shard.part)
        .collect();
    assert_eq!(started, [0, 1, 2, 3]);
    // AND the job holds the message as delivered, for list:123, in four parts not yet run
    // that cover every connection id once
    let job = stored_job(&store).await;
    assert_eq!(job.audience, Audience::Subscribers(vec![topic("list:123")]));
    assert_eq!(job.exclusions, Exclusions::default());
    let envelope: Value = serde_json::from_slice(&job.payload).unwrap();
    assert_eq!(envelope["id"], BROADCAST_ID);
    assert_eq!(envelope["data"], json!({"list_id": "123", "by": "alice"}));
    assert_eq!(job.parts.len(), 4);
    for part in &job.parts {
        assert_eq!((part.runs, part.runner.as_ref()), (0, None), "{part:?}");
        assert!(!part.progress.is_done(), "{part:?}");
    }
    for id in list_123().iter().chain(&ids(&[CAROL_ON_BOARD])) {
        let holding = job
            .parts
            .iter()
            .filter(|p| p.progress.rest.as_ref().unwrap().contains(id.as_str()))
            .count();
        assert_eq!(holding, 1, "{id} must be in exactly one part");
    }
}

#[tokio::test]
async fn broadcast_shard_runs_part_0_and_sends_to_exactly_the_connections_of_its_span() {
    // GIVEN the archived list's broadcast accepted, its part 0 holding some of list:123
    let store = list_store().await;
    let job = accepted(&store).await;
    let span = job.parts[0].progress.rest.clone().unwrap();
    let in_part_0: Vec<ConnectionId> = list_123()
        .into_iter()
        .filter(|id| span.contains(id.as_str()))
        .collect();
    assert!(!in_part_0.is_empty(), "the fixture puts someone in part 0");
    let (sender, launcher) = (RecordingSender::new(), RecordingLauncher::new());

    // WHEN Lambda delivers part 0's asynchronous invocation
    let response = run_background(&store, &sender, &launcher, BROADCAST_SHARD).await;

    // THEN the part ran to its end without continuing itself
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        http_json(&response),
        json!({"outcome": "Ran { done: true, continued: false }"})
    );
    assert!(launcher.launched().is_empty());
    // AND its connections got the message, once each, and nobody else did
    assert_eq!(recipients(&sender), in_part_0);
    // AND the part is done after one run, released, its report saved; the others untouched
    let after = stored_job(&store).await;
    let part = &after.parts[0];
    assert!(part.progress.is_done());
    assert_eq!(
        (part.runs, part.restarts, part.runner.as_ref()),
        (1, 0, None)
    );
    assert_eq!(part.progress.tally.report.delivered, in_part_0.len() as u64);
    assert_eq!(after.parts[1..], job.parts[1..]);

    // AND the same invocation delivered again (Lambda delivers at least once) sends nothing
    let again = RecordingSender::new();
    let response = run_background(&store, &again, &launcher, BROADCAST_SHARD).await;
    assert_eq!(
        http_json(&response),
        json!({"outcome": "Skipped(\"done\")"})
    );
    assert!(again.posts().is_empty());
}

#[tokio::test]
async fn broadcast_status_answers_each_part_and_done_once_every_part_has_run() {
    // GIVEN no background broadcast: the status of the id is unknown
    let store = list_store().await;
    let launcher = RecordingLauncher::new();
    let sender = RecordingSender::new();
    let response = run_background(&store, &sender, &launcher, BROADCAST_STATUS).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(http_json(&response)["error"], "not_found");

    // GIVEN then the archived list's broadcast accepted, and part 0 run
    let job = accepted(&store).await;
    run_background(&store, &sender, &launcher, BROADCAST_SHARD).await;
    let part_0 = sender.posts().len() as u64;

    // WHEN the backend reads the status
    let response = run_background(&store, &sender, &launcher, BROADCAST_STATUS).await;

    // THEN part 0 is done, the others wait for their first run, and the totals are part 0's
    assert_eq!(response.status(), StatusCode::OK);
    let status = http_json(&response);
    assert_eq!(status["id"], BROADCAST_ID);
    assert_eq!(status["status"], "running");
    assert_eq!(
        (&status["recipients"], &status["delivered"]),
        (&json!(part_0), &json!(part_0))
    );
    assert_eq!(status["created_at"], job.created_at_ms);
    let states: Vec<(&Value, &Value, &Value)> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["part"], &s["status"], &s["runs"]))
        .collect();
    assert_eq!(
        states,
        [
            (&json!(0), &json!("done"), &json!(1)),
            (&json!(1), &json!("waiting"), &json!(0)),
            (&json!(2), &json!("waiting"), &json!(0)),
            (&json!(3), &json!("waiting"), &json!(0)),
        ]
    );
    // AND nothing was stalled, so nothing was started again
    assert!(launcher.launched().is_empty());

    // WHEN the other parts run, and the status is read again
    let settings = Settings::default();
    let ctx = settings.context(&store, &sender);
    for part in 1..4 {
        let shard = Shard {
            broadcast_id: BROADCAST_ID.into(),
            part,
        };
        run_part(
            &shard,
            &format!("runner-{part}"),
            &ctx,
            &BroadcastConfig::default(),
            &launcher,
        )
        .await
        .unwrap();
    }
    let response = run_background(&store, &sender, &launcher, BROADCAST_STATUS).await;

    // THEN it is done: every connection on list:123 got it once, carol did not
    let status = http_json(&response);
    assert_eq!(status["status"], "done", "{status}");
    let everyone = list_123().len();
    assert_eq!(
        (
            &status["recipients"],
            &status["delivered"],
            &status["failed"]
        ),
        (&json!(everyone), &json!(everyone), &json!(0)),
        "{status}"
    );
    assert_eq!(
        (&status["continuations"], &status["restarts"]),
        (&json!(0), &json!(0))
    );
    let sent = recipients(&sender);
    assert_eq!(sent.len(), everyone, "each once: {sent:?}");
    assert_eq!(sent.into_iter().collect::<BTreeSet<_>>(), list_123());
}

#[test]
fn shard_events_are_what_lambda_http_passes_through_and_name_a_part() {
    for name in SHARD_EVENTS {
        let request = shard_event(name);
        assert!(
            matches!(
                request.request_context_ref(),
                Some(lambda_http::request::RequestContext::PassThrough)
            ),
            "{name}: not a pass-through invocation"
        );
        let shard = Shard::from_event(request.body())
            .unwrap_or_else(|| panic!("{name}: no {}", wsbridge::shards::SHARD_EVENT_KEY))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            shard,
            Shard {
                broadcast_id: BROADCAST_ID.into(),
                part: 0
            }
        );
        // The exact event the launcher sends: the function tells it from HTTP requests by
        // its one key.
        let raw: Value = serde_json::from_str(&load(name)).unwrap();
        assert_eq!(raw, shard.event(), "{name}");
    }
}
