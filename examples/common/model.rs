//! `--model`: a sentence-transformers directory, or, in a build with `--features hub`, a
//! Hugging Face Hub id `org/name[@revision]` when no such path exists (downloaded once
//! into the Hub cache; `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` and `HF_HOME` apply).

use std::path::Path;

use modelhost::error::LoadError;
use modelhost::models::sentence::SentenceEmbedder;
use modelhost::models::text::EmbedderOptions;

/// Loads the embedder `--model` names.
pub fn load_embedder(model: &str, options: EmbedderOptions) -> Result<SentenceEmbedder, LoadError> {
    #[cfg(feature = "hub")]
    if !Path::new(model).exists() && modelhost::hub::is_repo_id(model) {
        let (repo, revision) = modelhost::hub::parse_reference(model)?;
        let mut hub = modelhost::hub::HubOptions::new().progress(true);
        if let Some(revision) = revision {
            hub = hub.revision(revision);
        }
        return SentenceEmbedder::from_hub_with(&repo, &hub, options);
    }
    SentenceEmbedder::load_with(Path::new(model), options)
}
