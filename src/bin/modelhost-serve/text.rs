//! Text models as the OpenAI and TEI routes use them: a typed handle per kind, and which
//! model a request means when it names none.

use axum::http::StatusCode;

use modelhost::models::classifier::{CrossEncoder, TextClassifier};
use modelhost::models::sentence::{EmbedRequest, SentenceEmbedder};
use modelhost::models::text::TextTokens;
use modelhost::registry::VersionHandle;

use crate::error::{ApiError, ApiResult};
use crate::kind::Kind;
use crate::routes::App;

/// The server's embedder: it takes requests that may name a prompt.
pub(crate) type Embedder = SentenceEmbedder<EmbedRequest>;

/// A version of a text model, typed by kind.
#[derive(Clone)]
pub(crate) enum TextHandle {
    Embedder(VersionHandle<Embedder>),
    Classifier(VersionHandle<TextClassifier>),
    CrossEncoder(VersionHandle<CrossEncoder>),
}

impl TextHandle {
    /// The tokens of one text as a single-text model reads it; `None` for a cross-encoder
    /// (it reads pairs).
    pub(crate) fn tokens(&self, text: &str) -> Option<ApiResult<TextTokens>> {
        let tokens = match self {
            TextHandle::Embedder(h) => h.predictor().model().tokens(text),
            TextHandle::Classifier(h) => h.predictor().model().tokens(text),
            TextHandle::CrossEncoder(_) => return None,
        };
        Some(tokens.map_err(|e| ApiError::bad(e.to_string())))
    }
}

/// The model a text route serves: the one named (which must be one of `kinds`), else the
/// only model of those kinds; with its name.
pub(crate) fn pick(
    app: &App,
    model: Option<&str>,
    kinds: &[Kind],
    route: &str,
) -> ApiResult<(String, TextHandle)> {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let name = match model {
        Some(name) => {
            let set = app.find(name)?;
            if !kinds.contains(&set.kind()) {
                return Err(ApiError::bad(format!(
                    "model `{name}` is of kind {}; {route} serves {}",
                    set.kind().name(),
                    names.join(" and ")
                )));
            }
            name.to_string()
        }
        None => {
            let candidates: Vec<String> = (app.sets.iter())
                .filter(|s| kinds.contains(&s.kind()))
                .flat_map(|s| s.names())
                .collect();
            match &candidates[..] {
                [one] => one.clone(),
                [] => {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no {} model is served; {route} serves those",
                            names.join(" or ")
                        ),
                    ));
                }
                several => {
                    return Err(ApiError::bad(format!(
                        "several models could answer {route} ({several:?}); name one with `model`"
                    )));
                }
            }
        }
    };
    let handle = app.find(&name)?.text(&name, None)?.ok_or_else(|| {
        ApiError::bad(format!(
            "model `{name}` does not read text; {route} serves {names:?}"
        ))
    })?;
    Ok((name, handle))
}
