//! Issue: registers a confidential client and issues N families, and writes the client's
//! credentials and each family's refresh token to a file, for load generators outside this
//! crate (`scripts/wrk-refresh.lua`, the gateway benchmark).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::Target;
use crate::setup;

#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub target: Target,
    /// Token families to issue.
    #[arg(long, default_value_t = 64)]
    pub families: usize,
    /// The file to write: `<client_id> <client_secret>` on the first line, then one refresh
    /// token a line. Holds live credentials: it is created with mode 0600.
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let channel = setup::channel(&options.target.endpoint).await?;
    let client = setup::register(channel, "revoke-family").await?;
    let tokens = setup::clients(&options.target.endpoint, 1).await?;
    let pairs = setup::issue_families(&tokens[0], &client, options.families, 64).await?;

    let mut text = format!("{} {}\n", client.client_id, client.client_secret);
    for pair in &pairs {
        text.push_str(&pair.refresh_token);
        text.push('\n');
    }
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&options.out)
            .with_context(|| format!("cannot write {}", options.out.display()))?
    };
    file.write_all(text.as_bytes())?;
    println!(
        "bench issue: families={} client_id={} out={}",
        pairs.len(),
        client.client_id,
        options.out.display()
    );
    Ok(())
}
