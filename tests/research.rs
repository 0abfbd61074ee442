//! The research functions (cost and the leaderboard, routing, weighted IPW, fleet capacity)
//! against rows inserted by hand, every expected figure worked out here; and their `ipw`
//! calls, prices and weights, with bad input.

use ipw_coordinator::domain::analysis::Table;
use ipw_e2e::Fleet;
use ipw_e2e::fixture::{Fixture, R, close, ok};
use ipw_proto::v1::analysis_request::Kind;
use ipw_proto::v1::{
    AnalysisRequest, CapacityQuery, ElectricityPriceSpec, ImportPricesRequest, ImportWeightsRequest, LeaderboardQuery,
    PriceSpec, RoutingQuery, WeightedQuery,
};
use uuid::Uuid;

const FROM_2000: i64 = 946_684_800_000_000;

async fn analyze(fleet: &mut Fleet, kind: Kind) -> anyhow::Result<Table> {
    let wire = fleet.admin.analyze(AnalysisRequest { kind: Some(kind) }).await?.into_inner();
    Ok(Table::from_wire(wire)?)
}

fn num(t: &Table, row: usize, column: &str) -> f64 {
    t.number(row, column).unwrap_or_else(|| panic!("row {row} column {column} is NULL or missing: {:?}", t.rows[row]))
}

fn assert_close(t: &Table, row: usize, column: &str, want: f64) {
    let got = num(t, row, column);
    assert!(close(got, want), "row {row} {column}: got {got}, want {want}");
}

fn is_null(t: &Table, row: usize, column: &str) -> bool {
    t.rows[row].get(column).is_some_and(|v| v.is_null())
}

fn energy_only(correct: bool, energy: Option<f64>) -> R {
    R { energy, ..ok(correct, 1.0, 0.0) }
}

async fn electricity(fleet: &mut Fleet, per_kwh: f64) -> anyhow::Result<()> {
    let spec = ElectricityPriceSpec {
        per_kwh,
        currency: "USD".into(),
        valid_from_unix_us: Some(FROM_2000),
        valid_to_unix_us: None,
        source: "fixture".into(),
    };
    fleet.admin.set_electricity_price(spec).await?;
    Ok(())
}

/// Wilson's 95% interval (z = 1.96).
fn wilson(k: f64, n: f64) -> (f64, f64) {
    let (z, p) = (1.96_f64, k / n);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    (centre - half, centre + half)
}

#[tokio::test]
async fn the_leaderboard_costs_remote_tokens_and_local_electricity_side_by_side() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 4).await?;
    let (local, remote) = (fx.agent("cpu:local").await?, fx.agent("remote:api").await?);
    // Local: 36, 72 and 36 J over 1, 1 and 2 s; the fourth query's energy is unknown.
    let unknown = R { energy: None, ..ok(true, 1.0, 0.0) };
    let l = [ok(true, 1.0, 36.0), ok(false, 1.0, 72.0), ok(true, 2.0, 36.0), unknown];
    let (lrun, _) = fx.run("small", local, "2026-05-01", &l).await?;
    let r = [energy_only(true, None), energy_only(true, None), energy_only(false, None), energy_only(true, None)];
    let (rrun, _) = fx.run("big", remote, "2026-05-01", &r).await?;
    fx.provenance(rrun, remote, true, None).await?;
    fx.provenance(lrun, local, false, None).await?;

    // No prices yet: every cost is NULL, and says which price is missing.
    let t =
        analyze(&mut fleet, Kind::Leaderboard(LeaderboardQuery { run_ids: vec![lrun.to_string(), rrun.to_string()] }))
            .await?;
    let (small, big) = (0, 1);
    assert_eq!(t.text(big, "model"), Some("big"), "rows order by IPW, NULL last: {:?}", t.rows);
    assert!(is_null(&t, big, "cost_per_query"));
    assert_eq!(t.text(big, "cost_null_reason"), Some("no price of model big when it ran (ipw price set)"));
    assert_eq!(
        t.text(small, "cost_null_reason"),
        Some("energy unknown: no readable power source; no electricity price when it ran (ipw price electricity)")
    );

    // 1.00 in and 3.00 out per Mtok; 0.30 per kWh.
    let price = PriceSpec {
        model: "big".into(),
        input_per_mtok: 1.0,
        output_per_mtok: 3.0,
        currency: "USD".into(),
        valid_from_unix_us: Some(FROM_2000),
        valid_to_unix_us: None,
        source: "fixture pricing page".into(),
    };
    fleet.admin.set_price(price).await?;
    electricity(&mut fleet, 0.30).await?;
    let t =
        analyze(&mut fleet, Kind::Leaderboard(LeaderboardQuery { run_ids: vec![lrun.to_string(), rrun.to_string()] }))
            .await?;
    assert_eq!(t.columns[..4], ["model", "hardware_class", "workload", "engine_remote"]);

    // Remote: 5 in and 10 out tokens each, (5 x 1 + 10 x 3) / 1e6 = 35e-6 a query.
    assert_eq!(t.text(big, "cost_basis"), Some("api"));
    assert_eq!(t.rows[big]["engine_remote"], true);
    assert_eq!((num(&t, big, "queries"), num(&t, big, "correct"), num(&t, big, "costed")), (4.0, 3.0, 4.0));
    assert_close(&t, big, "cost_per_query", 35e-6);
    assert_close(&t, big, "api_cost_per_query", 35e-6);
    assert_close(&t, big, "cost_per_correct", 4.0 * 35e-6 / 3.0);
    assert!(
        is_null(&t, big, "energy_cost_per_query") && is_null(&t, big, "ipw") && is_null(&t, big, "cost_null_reason")
    );
    assert_eq!(t.text(big, "currency"), Some("USD"));

    // Local: J / 3.6e6 x 0.30 = 3e-6, 6e-6, 3e-6 and NULL; $0 on an API.
    assert_eq!(t.text(small, "cost_basis"), Some("electricity"));
    assert_eq!(num(&t, small, "costed"), 3.0);
    assert_close(&t, small, "cost_per_query", 4e-6);
    assert_close(&t, small, "energy_cost_per_query", 4e-6);
    assert_close(&t, small, "api_cost_per_query", 0.0);
    assert!(is_null(&t, small, "cost_per_correct"), "one query has no cost, so no cost per correct answer");
    assert_eq!(t.text(small, "cost_null_reason"), Some("energy unknown: no readable power source"));
    // Power 36, 72, 18 W; accuracy over those 2/3; IPW (2/3)/42; IPJ (2/3)/48; tokens/J 30/144.
    assert_close(&t, small, "ipw", (2.0 / 3.0) / 42.0);
    assert_close(&t, small, "ipj", (2.0 / 3.0) / 48.0);
    assert_close(&t, small, "joules_per_query", 48.0);
    assert_close(&t, small, "tokens_per_joule", 30.0 / 144.0);
    assert_close(&t, small, "accuracy", 0.75);
    let (low, high) = wilson(3.0, 4.0);
    assert!(
        (num(&t, small, "accuracy_ci_low") - low).abs() < 1e-6
            && (num(&t, small, "accuracy_ci_high") - high).abs() < 1e-6
    );
    // Latencies 1, 1, 2, 1: p50 1; p95 at 0.95 x 3 = 2.85 between 1 and 2: 1.85.
    assert_close(&t, small, "latency_p50_s", 1.0);
    assert_close(&t, small, "latency_p95_s", 1.85);
    assert_close(&t, small, "ttft_p50_s", 0.1);
    Ok(())
}

#[tokio::test]
async fn prices_change_over_time_and_refuse_bad_rows_and_overlaps() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let csv = "model,input_per_mtok,output_per_mtok,currency,valid_from,valid_to,source\n\
               m,2,8,USD,2026-01-01,,page read 2026-01-01\n\
               m,1,4,USD,2026-07-01,,page read 2026-07-01\n";
    let list = fleet.admin.import_prices(ImportPricesRequest { csv: csv.into() }).await?.into_inner().prices;
    assert_eq!(list.len(), 2);
    // The second closed the first where it began.
    assert_eq!(list[0].valid_to_unix_us, list[1].valid_from_unix_us);
    assert!(list[1].valid_to_unix_us.is_none());

    let bad = |csv: &str| ImportPricesRequest { csv: csv.into() };
    let e = fleet
        .admin
        .import_prices(bad("model,input_per_mtok,output_per_mtok,currency,valid_from,valid_to,source\n\
                                           n,1,1,USD,,,s\nn,-1,1,USD,,,s\n"))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "line 3: input_per_mtok must be a finite number of at least 0, not -1");
    // A closed window that overlaps a stored one is refused, naming the row; nothing of the
    // file is kept.
    let e = fleet
        .admin
        .import_prices(bad("model,input_per_mtok,output_per_mtok,currency,valid_from,valid_to,source\n\
                                           n,1,1,USD,2026-01-01,,s\nm,1,1,USD,2026-02-01,2026-03-01,s\n"))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("line 3: a price of model m already covers part of"), "{}", e.message());
    let after = fleet.admin.list_prices(ipw_proto::v1::ListPricesRequest {}).await?.into_inner().prices;
    assert_eq!(after.len(), 2, "the file's first row was rolled back with the rest");
    Ok(())
}

/// The routing fixture. Candidates A, B, then fallback F; energies in J:
///   q0: A ok 10, B ok 20, F ok 50  -> oracle A
///   q1: A wrong 10, B ok 20, F ok 50 -> B
///   q2: A ok 30, B ok 30, F ok 50  -> tie: A (listed first)
///   q3: A ok NULL, B wrong 20, F ok 50 -> A cannot be ranked: F
///   q4: A wrong 10, B no result, F wrong 50 -> nobody: F, unanswered
struct Routed {
    fx: Fixture,
    a: Uuid,
    b: Uuid,
    f: Uuid,
}

async fn routing_fixture(fleet: &Fleet) -> anyhow::Result<Routed> {
    let fx = Fixture::new(fleet.pool.clone(), 5).await?;
    let agent = fx.agent("cpu:local").await?;
    let e = |c: bool, j: f64| energy_only(c, Some(j));
    let a = [e(true, 10.0), e(false, 10.0), e(true, 30.0), energy_only(true, None), e(false, 10.0)];
    let (a, _) = fx.run("a", agent, "2026-05-01", &a).await?;
    let b = [e(true, 20.0), e(true, 20.0), e(true, 30.0), e(false, 20.0)];
    let (b, _) = fx.run_on("b", agent, "2026-05-01", &[(0, &b[0]), (1, &b[1]), (2, &b[2]), (3, &b[3])]).await?;
    let f = [e(true, 50.0), e(true, 50.0), e(true, 50.0), e(true, 50.0), e(false, 50.0)];
    let (f, _) = fx.run("f", agent, "2026-05-01", &f).await?;
    Ok(Routed { fx, a, b, f })
}

fn routing_query(r: &Routed, objective: &str, p: f64, seed: i32) -> Kind {
    Kind::Routing(RoutingQuery {
        run_ids: vec![r.a.to_string(), r.b.to_string()],
        fallback_run_id: r.f.to_string(),
        objective: objective.into(),
        router_accuracy: p,
        seed,
    })
}

#[tokio::test]
async fn the_oracle_router_takes_the_cheapest_correct_run_and_says_what_it_saved() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let r = routing_fixture(&fleet).await?;
    electricity(&mut fleet, 0.36).await?; // 0.36 / 3.6e6 = 1e-7 per J.
    for objective in ["energy", "cost"] {
        let t = analyze(&mut fleet, routing_query(&r, objective, 1.0, 0)).await?;
        let ids: Vec<&str> = (0..3).map(|i| t.text(i, "run_id").unwrap()).collect();
        assert_eq!(ids, [r.a.to_string(), r.b.to_string(), r.f.to_string()], "{objective}");
        let served: Vec<f64> = (0..3).map(|i| num(&t, i, "served")).collect();
        assert_eq!(served, [2.0, 1.0, 2.0], "{objective}: A q0 q2, B q1, F q3 q4");
        assert_close(&t, 0, "share", 0.4);
        assert_eq!(t.rows[2]["is_fallback"], true);
        // A's q3 has no energy; B's missing q4 is no result, not a lack of energy.
        let lacks: Vec<f64> = (0..3).map(|i| num(&t, i, "lacks_energy")).collect();
        assert_eq!(lacks, [1.0, 0.0, 0.0]);
        // Routed: q0-q3 right, q4 wrong; fallback alone the same.
        assert_close(&t, 0, "accuracy", 0.8);
        assert_close(&t, 0, "fallback_accuracy", 0.8);
        assert_close(&t, 0, "accuracy_kept", 1.0);
        // 10 + 20 + 30 + 50 + 50 = 160 J against 250 J: 36% saved.
        assert_close(&t, 0, "energy_j", 160.0);
        assert_close(&t, 0, "fallback_energy_j", 250.0);
        assert_close(&t, 0, "energy_savings_pct", 36.0);
        assert_close(&t, 0, "cost", 160e-7);
        assert_close(&t, 0, "fallback_cost", 250e-7);
        assert_close(&t, 0, "cost_savings_pct", 36.0);
        assert_eq!(num(&t, 0, "unanswered"), 1.0);
        assert_eq!(t.rows[0]["unanswered_queries"], serde_json::json!([r.fx.queries[4]]));
    }
    Ok(())
}

/// The p-accurate router's choice, worked out from the documented draws.
fn expected_choice(query_id: i64, seed: i32, p: f64, oracle: usize, with_result: &[usize]) -> usize {
    let draw = |m: u64, s: u64| ((query_id as u64 * m + seed as u64 * s) % (1 << 32)) as f64 / (1u64 << 32) as f64;
    if draw(2_654_435_761, 40_503) < p {
        return oracle;
    }
    let others: Vec<usize> = with_result.iter().copied().filter(|&c| c != oracle).collect();
    if others.is_empty() {
        return oracle;
    }
    others[(draw(2_246_822_519, 3_266_489_917) * others.len() as f64).floor() as usize]
}

#[tokio::test]
async fn the_p_accurate_router_follows_its_hashed_draws_and_bad_arguments_are_named() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let r = routing_fixture(&fleet).await?;
    // Per query: the oracle's choice (0 A, 1 B, 2 F), who has a result, who is right, energy.
    let oracle = [0, 1, 0, 2, 2];
    let has: [&[usize]; 5] = [&[0, 1, 2], &[0, 1, 2], &[0, 1, 2], &[0, 1, 2], &[0, 2]];
    let right =
        [[true, true, true], [false, true, true], [true, true, true], [true, false, true], [false, false, false]];
    let joules =
        [[10.0, 20.0, 50.0], [10.0, 20.0, 50.0], [30.0, 30.0, 50.0], [f64::NAN, 20.0, 50.0], [10.0, 0.0, 50.0]];
    for (p, seed) in [(0.5, 7), (0.0, 3), (0.8, 11)] {
        let t = analyze(&mut fleet, routing_query(&r, "energy", p, seed)).await?;
        let mut served = [0.0; 3];
        let (mut correct, mut energy) = (0.0, 0.0);
        for q in 0..5 {
            let c = expected_choice(r.fx.queries[q], seed, p, oracle[q], has[q]);
            served[c] += 1.0;
            correct += f64::from(u8::from(right[q][c]));
            energy += joules[q][c];
        }
        let got: Vec<f64> = (0..3).map(|i| num(&t, i, "served")).collect();
        assert_eq!(got, served, "p {p} seed {seed}");
        assert_close(&t, 0, "accuracy", correct / 5.0);
        match energy.is_nan() {
            // The router sent A's q3, whose energy is unknown: no total, never a guess.
            true => assert!(is_null(&t, 0, "energy_j") && is_null(&t, 0, "energy_savings_pct")),
            false => assert_close(&t, 0, "energy_j", energy),
        }
    }

    let e = fleet.admin.analyze(AnalysisRequest { kind: Some(routing_query(&r, "speed", 1.0, 0)) }).await.unwrap_err();
    assert_eq!(e.message(), "routing objective must be 'energy' or 'cost', not 'speed'");
    let e = fleet.admin.analyze(AnalysisRequest { kind: Some(routing_query(&r, "energy", 1.5, 0)) }).await.unwrap_err();
    assert_eq!(e.message(), "router accuracy must be between 0 and 1, not 1.5");
    Ok(())
}

#[tokio::test]
async fn weighted_ipw_weighs_categories_and_names_the_unmatched_ones() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let categories = [Some("law"), Some("law"), Some("math"), Some("math"), Some("bio")];
    let fx = Fixture::with_categories(fleet.pool.clone(), &categories).await?;
    let agent = fx.agent("cpu:local").await?;
    // Power 10, 10, 20, 20, 40 W (1 s each): mean 20 W.
    let rs =
        [ok(true, 1.0, 10.0), ok(false, 1.0, 10.0), ok(true, 1.0, 20.0), ok(true, 1.0, 20.0), ok(false, 1.0, 40.0)];
    let (run, _) = fx.run("m", agent, "2026-05-01", &rs).await?;
    let csv = "category,weight\nlaw,3\nmath,1\nchemistry,2\n";
    let request = ImportWeightsRequest { name: "tasks".into(), csv: csv.into(), source: "fixture".into() };
    assert_eq!(fleet.admin.import_weights(request).await?.into_inner().categories, 3);

    let t = analyze(&mut fleet, Kind::Weighted(WeightedQuery { weights: "tasks".into() })).await?;
    assert_eq!(t.text(0, "run_id"), Some(run.to_string().as_str()));
    assert_close(&t, 0, "accuracy", 0.6);
    // law 1/2 x 3 + math 1 x 1, over 3 + 1: 0.625.
    assert_close(&t, 0, "weighted_accuracy", 0.625);
    assert_close(&t, 0, "mean_power_w", 20.0);
    assert_close(&t, 0, "ipw", 0.03);
    assert_close(&t, 0, "weighted_ipw", 0.031_25);
    assert_eq!(num(&t, 0, "categories_weighted"), 2.0);
    assert_close(&t, 0, "weight_covered", 4.0 / 6.0);
    assert_eq!(t.rows[0]["missing_categories"], serde_json::json!(["chemistry"]));
    assert_eq!(t.rows[0]["unweighted_categories"], serde_json::json!(["bio"]));

    let bad = ImportWeightsRequest {
        name: "bad".into(),
        csv: "category,weight\nlaw,1\nlaw,2\n".into(),
        source: String::new(),
    };
    let e = fleet.admin.import_weights(bad).await.unwrap_err();
    assert_eq!(e.message(), "line 3: category \"law\" was already given on line 2");
    let e = fleet
        .admin
        .analyze(AnalysisRequest { kind: Some(Kind::Weighted(WeightedQuery { weights: "bad".into() })) })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "no weight set named 'bad' (ipw weights import FILE.csv --name NAME)");
    Ok(())
}

#[tokio::test]
async fn fleet_capacity_multiplies_the_best_measured_ipw_by_the_power_envelope() -> anyhow::Result<()> {
    let mut fleet = Fleet::start().await?;
    let fx = Fixture::new(fleet.pool.clone(), 2).await?;
    let (x1, x2) = (fx.agent("gpu:x").await?, ipw_e2e::fixture_agent(&fleet.pool, "second-x", "gpu:x").await?);
    fx.agent("gpu:y").await?;
    // On gpu:x: run 1 at 10 W, accuracy 1/2; run 2 at 20 W (40 J over 2 s), accuracy 1.
    let (r1, _) = fx.run("small", x1, "2026-05-01", &[ok(true, 1.0, 10.0), ok(false, 1.0, 10.0)]).await?;
    let (r2, _) = fx.run("big", x2, "2026-05-01", &[ok(true, 2.0, 40.0), ok(true, 2.0, 40.0)]).await?;
    fx.provenance(r1, x1, false, Some(300.0)).await?;
    fx.provenance(r2, x2, false, Some(400.0)).await?;

    let t = analyze(&mut fleet, Kind::Capacity(CapacityQuery {})).await?;
    assert_eq!(t.rows.len(), 2, "{:?}", t.rows);
    assert_eq!((t.text(0, "hardware_class"), num(&t, 0, "agents")), (Some("gpu:x"), 2.0));
    assert_close(&t, 0, "power_limit_w", 700.0);
    // IPW: run 1 0.5/10 = 0.05, run 2 1/20 = 0.05: a tie, broken by run id. IPJ 0.05 and 0.025.
    let best = t.text(0, "best_run_id").unwrap().to_owned();
    let want_ipj = if best == r1.to_string() { 0.05 } else { 0.025 };
    assert_eq!(best, r1.min(r2).to_string());
    assert_close(&t, 0, "best_ipw", 0.05);
    assert_close(&t, 0, "ipw_x_power_limit", 35.0);
    assert_close(&t, 0, "correct_per_s", want_ipj * 700.0);
    assert!(is_null(&t, 0, "null_reason"));
    // gpu:y: never measured, never reported a limit.
    assert_eq!(t.text(1, "hardware_class"), Some("gpu:y"));
    assert!(is_null(&t, 1, "power_limit_w") && is_null(&t, 1, "best_ipw") && is_null(&t, 1, "correct_per_s"));
    assert_eq!(
        t.text(1, "null_reason"),
        Some("no run on this class has a measured IPW; 1 of 1 agents never reported a power limit")
    );
    Ok(())
}

#[tokio::test]
async fn ipw_plot_draws_the_routing_curve_cost_against_accuracy_and_weighted_ipw() -> anyhow::Result<()> {
    use ipw_coordinator::cli::reports::plot;
    use ipw_coordinator::cli::research::{Objective, PlotResearchArgs};
    let mut fleet = Fleet::start().await?;
    let r = routing_fixture(&fleet).await?;
    electricity(&mut fleet, 0.36).await?;
    // The fixture's queries have no category: they count as "(none)".
    let weights = ImportWeightsRequest {
        name: "tasks".into(),
        csv: "category,weight\n(none),1\n".into(),
        source: "fixture".into(),
    };
    fleet.admin.import_weights(weights).await?;
    let (url, runs) = (fleet.coordinator.url(), vec![r.a.to_string(), r.b.to_string(), r.f.to_string()]);
    let args = PlotResearchArgs {
        routing_runs: vec![r.a.to_string(), r.b.to_string()],
        routing_fallback: Some(r.f.to_string()),
        routing_objective: vec![Objective::Energy, Objective::Cost],
        routing_seed: 0,
        weights: Some("tasks".into()),
    };
    let out = fleet.dir.path().join("plots");
    let files = plot(&mut fleet.admin, &url, runs.clone(), None, &out, &args).await?;
    // The figure's words, tags left out: a note wraps over several <text> elements.
    let read = |name: &str| -> anyhow::Result<String> {
        let svg = std::fs::read_to_string(out.join(name))?;
        let words: String = svg.split('<').map(|s| s.split_once('>').map_or(s, |(_, text)| text)).collect();
        Ok(words.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    assert!(files.contains(&out.join("routing.svg")) && files.len() == 7, "{files:?}");

    let routing = read("routing.svg")?;
    for want in ["energy savings (%)", "cost savings (%)", "accuracy kept, energy router (%)", "router accuracy p"] {
        assert!(routing.contains(want), "{want}");
    }
    assert!(routing.contains(&format!("fallback {}, seed 0", &r.f.to_string()[..8])));
    // A's q3 has no energy, so no cost either: the figure names A for both.
    let a = &r.a.to_string()[..8];
    assert!(routing.contains(&format!("Runs with results lacking energy: {a}.")), "{routing}");
    assert!(routing.contains(&format!("Runs with results lacking cost: {a}.")), "{routing}");
    let cost = read("cost_vs_accuracy.svg")?;
    for want in [
        "a @ cpu:local (fixture), electricity",
        "f @ cpu:local (fixture), electricity",
        "Pareto frontier",
        "Cost in USD",
    ] {
        assert!(cost.contains(want), "{want}: {cost}");
    }
    // A's q3 has no energy: its cost per query is over 4 of 5 queries, and the figure says so.
    assert!(
        cost.contains("a @ cpu:local (fixture) (4 of 5 queries: energy unknown: no readable power source)"),
        "{cost}"
    );
    let weighted = read("weighted_ipw.svg")?;
    for want in ["(weights: tasks)", "y = x", "a @ cpu:local", "b @ cpu:local", "f @ cpu:local"] {
        assert!(weighted.contains(want), "{want}");
    }
    assert!(!weighted.contains("Left out"), "every run has both IPWs: {weighted}");

    // Without a fallback or weights: no routing curve and no weighted figure, and no error.
    let bare = fleet.dir.path().join("bare");
    let files = plot(&mut fleet.admin, &url, runs, None, &bare, &PlotResearchArgs::default()).await?;
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(!bare.join("routing.svg").exists() && !bare.join("weighted_ipw.svg").exists());
    Ok(())
}
