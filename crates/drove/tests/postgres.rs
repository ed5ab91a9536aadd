//! The facade's PostgreSQL store (feature `postgres`): two engines on one database and schema,
//! as two processes of one program would open them; a job submitted through one is run by a
//! handler of the other and its result awaited through the first.
//! Needs `DROVE_TEST_DATABASE_URL`; skipped (saying so) without it, unless
//! `DROVE_REQUIRE_POSTGRES=1`.

use std::time::Duration;

use drove::{JobState, NewJob, PostgresOptions, Runtime, WorkerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_one_postgres_schema() {
    let Ok(url) = std::env::var("DROVE_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("DROVE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "DROVE_REQUIRE_POSTGRES=1 but DROVE_TEST_DATABASE_URL is not set"
        );
        eprintln!("PostgreSQL tests skipped: DROVE_TEST_DATABASE_URL is not set");
        return;
    };
    let schema = format!("dt_facade_{}_{:06x}", std::process::id(), fastrand_u32());
    let opts = || PostgresOptions::new(url.clone()).with_schema(schema.clone());
    let submitter = drove::open_postgres(opts()).await.expect("open the first engine");
    let runner = drove::open_postgres(opts()).await.expect("open the second engine");
    let runtime = Runtime::new(runner.clone())
        .handle("facade", WorkerOptions::concurrency(2), |ctx: drove::JobContext| async move {
            let n: i64 = ctx.payload()?;
            Ok(serde_json::json!({ "doubled": n * 2 }))
        })
        .start();
    let payload = serde_json::value::to_raw_value(&21).unwrap();
    let sub = submitter.submit(vec![NewJob::new("facade", payload)]).await.expect("submit");
    let done = submitter
        .wait_job(sub[0].job.id, Duration::from_secs(60))
        .await
        .expect("wait")
        .expect("the job exists");
    runtime.shutdown(Duration::from_secs(10)).await;
    runner.shutdown().await;
    submitter.shutdown().await;
    drove_postgres_drop(opts()).await.expect("drop the test schema");
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let result: serde_json::Value = serde_json::from_str(done.result.as_ref().unwrap().get()).unwrap();
    assert_eq!(result, serde_json::json!({ "doubled": 42 }));
}

fn fastrand_u32() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    t.subsec_nanos() & 0xff_ffff
}

async fn drove_postgres_drop(opts: PostgresOptions) -> Result<(), drove::StoreError> {
    drove::drop_postgres_schema(&opts).await
}
