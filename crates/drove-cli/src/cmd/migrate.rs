//! `drove migrate`

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The PostgreSQL database (postgres://...).
    #[arg(long, env = "DROVE_DATABASE_URL")]
    pub database_url: String,
    /// The schema holding Drove's tables.
    #[arg(long, env = "DROVE_SCHEMA", default_value = drove_postgres::DEFAULT_SCHEMA)]
    pub schema: String,
}

/// Applies pending migrations (safe while other nodes run or migrate: they take turns).
pub async fn run(a: Args) -> anyhow::Result<std::process::ExitCode> {
    let opts = drove_postgres::PostgresOptions::new(a.database_url).with_schema(a.schema);
    let applied = drove_postgres::migrate(&opts).await.context("migrating")?;
    if applied.is_empty() {
        println!("schema {} is up to date (version {})", opts.schema, drove_postgres::SCHEMA_VERSION);
    } else {
        println!("schema {}: applied versions {applied:?}", opts.schema);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
