//! `ipw-minimal-client`: the baseline a fleet agent is compared with, the least a streaming
//! OpenAI client can do. It keeps exactly `--concurrency` chat requests in flight, reads each
//! SSE stream to `[DONE]`, and prints one JSON line: requests, errors, wall time (first send
//! to last byte), successful requests per second, this process's CPU seconds, output tokens.

use clap::Parser;
use futures::StreamExt;
use ipw_bench::cpu::process_cpu_s;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The prompt `--requests` sends when no `--prompts` file is given.
const FIXED_PROMPT: &str = "What is 2 + 2? Answer in one word.";

#[derive(Parser)]
#[command(
    name = "ipw-minimal-client",
    version,
    about = "The baseline for the agent's own cost: the least a \
    streaming OpenAI client can do. Prints one JSON line of throughput and CPU."
)]
struct Args {
    /// The engine's base URL (`/v1/chat/completions` is appended).
    #[arg(long)]
    url: String,
    /// The model to ask for.
    #[arg(long, default_value = "engine-simulator")]
    model: String,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// JSON lines of `{"messages": [{role, content}, ...]}`: the prompts exactly as sent (the
    /// benchmark takes them from the run's queries, so both clients send the same text).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Prompt lines to skip.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Prompt lines to use, after the offset.
    #[arg(long)]
    limit: Option<usize>,
    /// Requests to send, cycling through the prompts (default: one per prompt). Without
    /// `--prompts`, sends a fixed one-line prompt this many times.
    #[arg(long)]
    requests: Option<usize>,
    /// max_tokens of each request.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// temperature of each request.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Tokio worker threads; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Deserialize)]
struct PromptLine {
    messages: Value,
}

fn load_prompts(path: &Path, offset: usize, limit: Option<usize>) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).skip(offset);
    lines
        .take(limit.unwrap_or(usize::MAX))
        .map(|(i, line)| {
            let p: PromptLine = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
            Ok(p.messages)
        })
        .collect()
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    completion_tokens: u64,
}

/// Sends one streamed request and reads it to `[DONE]`; returns the output tokens (from
/// `usage`, or the content chunks counted where the engine sends no usage).
async fn stream_one(client: &reqwest::Client, endpoint: &str, body: &Value) -> anyhow::Result<u64> {
    // A request that never reached the engine (a kept-alive connection it had just closed) is
    // sent again: nothing was measured, and dropping it would make the baseline do less work.
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        match client.post(endpoint).json(body).send().await {
            Err(e) if (e.is_connect() || e.is_request()) && !e.is_timeout() && attempt < 3 => continue,
            sent => break sent?.error_for_status()?,
        }
    };
    let mut stream = response.bytes_stream();
    let (mut buf, mut chunks, mut usage_tokens) = (Vec::new(), 0u64, None);
    while let Some(bytes) = stream.next().await {
        buf.extend_from_slice(&bytes?);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = buf[start..start + nl].strip_suffix(b"\r").unwrap_or(&buf[start..start + nl]);
            start += nl + 1;
            let Some(data) = line.strip_prefix(b"data:") else { continue };
            let data = data.trim_ascii_start();
            if data == b"[DONE]" {
                return Ok(usage_tokens.unwrap_or(chunks));
            }
            let chunk: Chunk = serde_json::from_slice(data)?;
            chunks += chunk.choices.iter().filter(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty())).count()
                as u64;
            if let Some(u) = chunk.usage {
                usage_tokens = Some(u.completion_tokens);
            }
        }
        buf.drain(..start);
    }
    anyhow::bail!("the stream ended without [DONE]")
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    output_tokens: u64,
    last_byte: Option<Instant>,
}

struct Job {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    max_tokens: u32,
    temperature: f64,
    prompts: Vec<Value>,
    requests: usize,
    next: AtomicUsize,
}

/// One of `concurrency` workers: each takes the next request as soon as its last one ended,
/// so exactly that many are in flight until the queue runs dry.
async fn worker(job: Arc<Job>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.requests {
            return tally;
        }
        let body = json!({"model": job.model, "messages": job.prompts[i % job.prompts.len()], "stream": true,
            "stream_options": {"include_usage": true}, "max_tokens": job.max_tokens, "temperature": job.temperature});
        match stream_one(&job.client, &job.endpoint, &body).await {
            Ok(tokens) => (tally.ok, tally.output_tokens) = (tally.ok + 1, tally.output_tokens + tokens),
            Err(e) => {
                if tally.errors == 0 {
                    eprintln!("request {i}: {e:#}");
                }
                tally.errors += 1;
            }
        }
        tally.last_byte = Some(Instant::now());
    }
}

async fn run(args: Args) -> anyhow::Result<Value> {
    let prompts = match &args.prompts {
        Some(path) => load_prompts(path, args.offset, args.limit)?,
        None => vec![json!([{"role": "user", "content": FIXED_PROMPT}])],
    };
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    let requests = match (args.requests, &args.prompts) {
        (Some(n), _) => n,
        (None, Some(_)) => prompts.len(),
        (None, None) => anyhow::bail!("give --prompts FILE or --requests N"),
    };
    let concurrency = args.concurrency.max(1);
    let job = Arc::new(Job {
        // Idle connections go before llama.cpp's 5 s keep-alive closes them, as the agent does.
        client: ipw_proto::tls::http_client()
            .pool_max_idle_per_host(concurrency)
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build()?,
        endpoint: format!("{}/v1/chat/completions", args.url.trim_end_matches('/')),
        model: args.model,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        prompts,
        requests,
        next: AtomicUsize::new(0),
    });
    let (user0, sys0) = process_cpu_s()?;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency).map(|_| tokio::spawn(worker(job.clone()))).collect();
    let mut total = Tally::default();
    for w in workers {
        let t = w.await?;
        total.ok += t.ok;
        total.errors += t.errors;
        total.output_tokens += t.output_tokens;
        total.last_byte = total.last_byte.max(t.last_byte);
    }
    let (user1, sys1) = process_cpu_s()?;
    let wall_s = total.last_byte.map_or(0.0, |t| (t - started).as_secs_f64());
    Ok(json!({
        "requests": total.ok + total.errors,
        "errors": total.errors,
        "wall_s": wall_s,
        // Successful requests only: errors are not throughput.
        "requests_per_s": if wall_s > 0.0 { total.ok as f64 / wall_s } else { 0.0 },
        "cpu_user_s": user1 - user0,
        "cpu_sys_s": sys1 - sys0,
        "output_tokens": total.output_tokens,
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = ipw_bench::runtime(args.threads)?.block_on(run(args))?;
    println!("{report}");
    Ok(())
}
