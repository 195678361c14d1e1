//! The frame of every page: the stylesheet, the navigation, who is signed
//! in with which role, the logout button, and the pause banner whenever
//! the workers are paused.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::csrf;
use crate::console::{Console, Visitor};
use crate::store::pause::{self, Pause};

/// The whole stylesheet: small enough to send inline with every page.
const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232a; background: #f5f6f8; }
header { background: #1f2d3d; color: #fff; display: flex; align-items: center; gap: 1.5em; padding: .6em 1.5em; }
header a { color: #d8e2ee; text-decoration: none; }
header nav a { margin-right: .9em; }
header a:hover, header a.here { color: #fff; text-decoration: underline; }
header .who { margin-left: auto; display: flex; gap: .8em; align-items: center; }
header form { margin: 0; }
header button { background: transparent; color: #d8e2ee; border: 1px solid #6b7d90; padding: .2em .7em; }
main { padding: 1em 1.5em 3em; max-width: 1200px; }
h1 { font-size: 1.5em; margin: .3em 0 .6em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; background: #fff; width: 100%; margin-bottom: 1em; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #fff; border: 1px solid #e3e6ea; padding: .8em; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
.banner { background: #fff3cd; border-bottom: 2px solid #e0a800; padding: .6em 1.5em; font-weight: 600; }
.error { background: #fdecea; border: 1px solid #f5c2c0; color: #8a1c17; padding: .6em .8em; }
.notice { background: #e8f4ea; border: 1px solid #b9dcc0; padding: .6em .8em; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; margin-bottom: 1em; }
.card { background: #fff; border: 1px solid #e3e6ea; padding: .6em 1em; min-width: 9em; }
.card .value { font-size: 1.6em; font-weight: 600; }
.card .label { color: #5b6672; }
form.inline { display: flex; gap: .5em; align-items: center; flex-wrap: wrap; margin: .3em 0; }
input[type=text], input:not([type]) { padding: .3em .5em; border: 1px solid #b8c0c8; border-radius: 3px; }
button { padding: .3em .9em; border: 1px solid #2c5d8f; background: #2f6db0; color: #fff; border-radius: 3px; cursor: pointer; }
button.danger { background: #b3261e; border-color: #8a1c17; }
.status { padding: 0 .4em; border-radius: 3px; font-size: .9em; background: #e3e6ea; }
.status.processed, .status.done { background: #d4edda; } .status.error, .status.stopped { background: #f8d7da; }
.status.pending, .status.publishing, .status.resetting { background: #fff3cd; }
.chart { background: #fff; border: 1px solid #e3e6ea; padding: .5em; margin-bottom: 1em; }
.muted { color: #5b6672; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; background: #fff; padding: .8em; border: 1px solid #e3e6ea; }
dl.fields dt { font-weight: 600; } dl.fields dd { margin: 0; }
"#;

pub(super) fn style() -> Markup {
    html! { style { (PreEscaped(STYLE)) } }
}

/// The navigation: path and label.
const NAV: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/events", "Events"),
    ("/dlq", "Dead letters"),
    ("/plans", "Plans"),
    ("/pause", "Pause"),
    ("/audit", "Audit"),
];

/// `body` in the frame, with the pause banner if the workers are paused.
pub(super) async fn render(console: &Console, visitor: &Visitor, here: &str, title: &str, body: Markup) -> Markup {
    // A pause that cannot be read is shown as unknown rather than as "running".
    let paused = pause::current(console.pool()).await;
    frame(visitor, &paused, here, title, body)
}

fn frame(
    visitor: &Visitor,
    paused: &Result<Option<Pause>, crate::store::StoreError>,
    here: &str,
    title: &str,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · replay console" }
                (style())
            }
            body {
                header {
                    strong { "replay" }
                    nav {
                        @for (path, label) in NAV {
                            a href=(path) class=[(path == here).then_some("here")] { (label) } " "
                        }
                    }
                    div.who {
                        span #signed-in { (visitor.name) " (" (visitor.role) ")" }
                        form method="post" action="/logout" { (csrf(visitor)) button type="submit" { "Log out" } }
                    }
                }
                @match paused {
                    Ok(Some(pause)) => div.banner #pause-banner role="status" {
                        "Workers paused since " (super::time(&pause.paused_at)) " by " (pause.operator) ": " (pause.reason)
                        " · " a href="/pause" { "resume" }
                    },
                    Ok(None) => {},
                    Err(error) => div.banner #pause-banner role="status" { "Whether the workers are paused is unknown: " (error) },
                }
                main { (body) }
            }
        }
    }
}
