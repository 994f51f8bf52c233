//! Failover timelines as PNG: one file per load balancer, one panel per
//! scenario, one dot per client request at the time it started, in the lane
//! of the master that answered it (or "failed").

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use crate::results::{Failover, Timeline};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn register_font() -> Result<()> {
    let bytes = std::fs::read(FONT)
        .with_context(|| format!("read {FONT} (Debian package fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    Ok(())
}

fn scenario_title(s: &str) -> &str {
    match s {
        "crash" => "crash (connections reset, new ones refused)",
        "blackhole" => "black hole (every packet dropped)",
        "drain" => "graceful drain (/readyz answers 500)",
        other => other,
    }
}

fn secs(v: Option<f64>, cap: f64) -> String {
    v.map_or(format!("> {cap:.0} s"), |v| format!("{v:.2} s"))
}

/// Draws `docs/bench/timeline-<setup>.png`.
pub fn timeline(path: &Path, label: &str, f: &Failover, lines: &[&Timeline]) -> Result<()> {
    let root =
        BitMapBackend::new(path, (1100, 300 * lines.len().max(1) as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (title, body) = root.split_vertically(40);
    title
        .draw_text(
            &format!(
                "{label}: one new TLS request every {} ms, dot = when it started",
                f.client_period_ms
            ),
            &("sans-serif", 20).into_text_style(&title),
            (10, 10),
        )
        .map_err(|e| anyhow!("{e}"))?;
    let panels = body.split_evenly((lines.len().max(1), 1));
    for (tl, area) in lines.iter().zip(panels.iter()) {
        let x_max = tl
            .requests
            .iter()
            .map(|r| r.0)
            .fold(5.0_f64, f64::max)
            .max(tl.failover_s.unwrap_or(0.0) + 2.0)
            .ceil();
        let caption = format!(
            "{}: last affected request {}, failed {}{}",
            scenario_title(&tl.scenario),
            secs(tl.failover_s, f.cap_s),
            tl.requests.iter().filter(|r| r.0 >= 0.0 && r.2 < 0).count(),
            tl.kernel_s.map_or(String::new(), |k| format!(
                ", kernel rule out after {k:.3} s"
            )),
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(125)
            .build_cartesian_2d(-2.0..x_max, -0.6..3.6)
            .map_err(|e| anyhow!("{e}"))?;
        let victim = tl.victim as i32;
        chart
            .configure_mesh()
            .y_labels(5)
            .y_label_formatter(&|y: &f64| {
                let lane = y.round() as i32;
                match lane {
                    0 => "failed".to_string(),
                    1..=3 if (y - y.round()).abs() < 0.01 => {
                        if lane - 1 == victim {
                            format!("master {lane} (victim)")
                        } else {
                            format!("master {lane}")
                        }
                    }
                    _ => String::new(),
                }
            })
            .x_desc("seconds since the failure")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let slow = f.slow_threshold_s;
        let dot = |r: &(f64, f64, i32)| -> (f64, f64, RGBColor) {
            let lane = if r.2 < 0 { 0.0 } else { (r.2 + 1) as f64 };
            let color = if r.2 < 0 {
                RED
            } else if r.1 >= slow {
                RGBColor(230, 140, 0)
            } else if r.2 == victim && r.0 >= 0.0 {
                RGBColor(150, 0, 150)
            } else {
                RGBColor(0, 140, 60)
            };
            (r.0, lane, color)
        };
        chart
            .draw_series(tl.requests.iter().map(|r| {
                let (x, y, c) = dot(r);
                Circle::new((x, y), 3, c.filled())
            }))
            .map_err(|e| anyhow!("{e}"))?;
        let vline =
            |x: f64, c: RGBColor| LineSeries::new(vec![(x, -0.6), (x, 3.6)], c.stroke_width(2));
        chart
            .draw_series(vline(0.0, BLACK))
            .map_err(|e| anyhow!("{e}"))?;
        if let Some(fo) = tl.failover_s {
            chart
                .draw_series(vline(fo, RED))
                .map_err(|e| anyhow!("{e}"))?;
        }
        if let Some(k) = tl.kernel_s {
            chart
                .draw_series(vline(k, BLUE))
                .map_err(|e| anyhow!("{e}"))?;
        }
        if let Some(i) = tl.idle_stuck_s {
            chart
                .draw_series(vline(i, RGBColor(120, 120, 120)))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
