//! Run-time choice of the instruction-set level for the dense-layer kernels.
//!
//! The CPU is probed once; the `MODELHOST_ISA` environment variable can lower (never raise)
//! the level, e.g. to compare paths or to work around a misbehaving machine. Every kernel
//! entry point also takes an explicit level, which is clamped to [`detected`] so forcing a
//! level the CPU lacks is safe: it silently runs the best level the CPU has below it.

use std::sync::OnceLock;

/// The environment variable that caps the level: `portable`, `avx2`, `avx512`, `avx512vnni`
/// or `avx512bf16`.
pub(crate) const ENV_VAR: &str = "MODELHOST_ISA";

/// Instruction-set levels, ordered: each level implies everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Isa {
    /// Plain Rust, no explicit SIMD (any target).
    Portable,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// AVX-512 F + BW + VL + DQ (and AVX2 + FMA).
    Avx512,
    /// [`Isa::Avx512`] + AVX512_VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// [`Isa::Avx512Vnni`] + AVX512_BF16 (`vdpbf16ps`).
    Avx512Bf16,
}

impl Isa {
    /// Every level, lowest first.
    pub(crate) const ALL: [Isa; 5] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Avx512Bf16,
    ];

    /// The level's name, as accepted by `MODELHOST_ISA`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Avx512Bf16 => "avx512bf16",
        }
    }

    /// Parses a level name (case-insensitive, surrounding blanks ignored).
    pub(crate) fn parse(name: &str) -> Option<Isa> {
        let name = name.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name))
    }

    #[cfg(test)]
    /// Whether this CPU can run code of this level.
    pub(crate) fn is_supported(self) -> bool {
        self <= detected()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU supports, probed once.
pub(crate) fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(probe)
}

#[cfg(target_arch = "x86_64")]
fn probe() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma")) {
        return Isa::Portable;
    }
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq")) {
        return Isa::Avx2;
    }
    if !has!("avx512vnni") {
        return Isa::Avx512;
    }
    if !has!("avx512bf16") {
        return Isa::Avx512Vnni;
    }
    Isa::Avx512Bf16
}

#[cfg(not(target_arch = "x86_64"))]
fn probe() -> Isa {
    Isa::Portable
}

/// The level the kernels use by default: [`detected`] capped by `MODELHOST_ISA`, read once.
pub(crate) fn active() -> Isa {
    active_and_problem().0
}

/// Why `MODELHOST_ISA` was ignored, if it was set to something that is not a level name
/// (for the caller to log once); `None` when it is unset or valid.
pub(crate) fn env_problem() -> Option<&'static str> {
    active_and_problem().1.as_deref()
}

fn active_and_problem() -> &'static (Isa, Option<String>) {
    static ACTIVE: OnceLock<(Isa, Option<String>)> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        let value = std::env::var(ENV_VAR).ok();
        match cap(detected(), value.as_deref()) {
            Ok(isa) => (isa, None),
            Err(problem) => (detected(), Some(problem)),
        }
    })
}

/// `detected` capped by the value of `MODELHOST_ISA` (`None`: unset). The cap only lowers
/// the level; an unknown name is an error (the caller keeps `detected`).
pub(crate) fn cap(detected: Isa, value: Option<&str>) -> Result<Isa, String> {
    match value {
        None => Ok(detected),
        Some(value) if value.trim().is_empty() => Ok(detected),
        Some(value) => match Isa::parse(value) {
            Some(limit) => Ok(detected.min(limit)),
            None => Err(format!(
                "{ENV_VAR}={value:?} is not one of portable, avx2, avx512, avx512vnni, \
                 avx512bf16; using the detected level {detected}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_only_lowers() {
        assert_eq!(cap(Isa::Avx512, None), Ok(Isa::Avx512));
        assert_eq!(cap(Isa::Avx512, Some("")), Ok(Isa::Avx512));
        assert_eq!(cap(Isa::Avx512, Some("avx2")), Ok(Isa::Avx2));
        assert_eq!(cap(Isa::Avx512, Some(" AVX512BF16 ")), Ok(Isa::Avx512));
        assert_eq!(cap(Isa::Avx2, Some("portable")), Ok(Isa::Portable));
        assert!(cap(Isa::Avx2, Some("sse9")).is_err());
    }

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert!(Isa::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn probes_do_not_panic() {
        let detected = detected();
        assert!(active() <= detected);
        assert!(detected.is_supported());
        let _ = env_problem();
    }
}
