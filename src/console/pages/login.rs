//! The sign-in page: one field for a token, and what went wrong last time.
//! The token is posted to `/login` (see `session`) and never shown again.

use maud::{html, Markup, DOCTYPE};

pub(crate) fn page(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Sign in · replay console" } (super::layout::style()) }
            body {
                main style="max-width: 32em; margin: 4em auto;" {
                    h1 { "replay console" }
                    @if let Some(error) = error { p.error #login-error role="alert" { (error) } }
                    form method="post" action="/login" {
                        p { label for="token" { "Token" } }
                        p { input #token type="password" name="token" autocomplete="off" size="50" required; }
                        p { button type="submit" { "Sign in" } }
                    }
                    p.muted { "An admin makes tokens with " code { "replay token create --name NAME --role viewer|operator|admin" } "." }
                }
            }
        }
    }
}
