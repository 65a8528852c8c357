//! The attacker's work for a door, counted as docs/PROTOCOL.md section 8 states it.

/// What multiplies an off-path attacker's chances.
#[derive(Debug, Clone, Copy)]
pub struct DoorShape {
    /// Alphabet size N.
    pub alphabet: u32,
    /// Knocks per sequence K.
    pub length: usize,
    /// Look-ahead window W.
    pub window: u32,
    /// Clients C.
    pub clients: u32,
    /// Epochs accepted E.
    pub epochs: u32,
    /// Purposes S (2 with a closing sequence).
    pub purposes: u32,
    /// Doors sharing the range D.
    pub doors_sharing: u32,
    /// Miss budget m.
    pub misses: u8,
    /// Whether knocks 2..K depend on the source.
    pub bind_source: bool,
}

/// Attempts one first knock starts (docs/PROTOCOL.md section 7): one that follows the source
/// port, one that follows the whole address. An attacker who spreads his packets over ports can
/// at most double his chances with them.
pub const ATTEMPTS_PER_FIRST_KNOCK: u32 = 2;

fn log2_binomial(n: u64, k: u64) -> f64 {
    (0..k).map(|i| ((n - i) as f64).log2() - ((i + 1) as f64).log2()).sum()
}

/// Off-path strength in bits: log2(N) + (K-1)·log2(N-1) - log2(W·C·E·S·D·A) - log2 C(K+m, m),
/// A being [`ATTEMPTS_PER_FIRST_KNOCK`].
pub fn off_path_bits(d: &DoorShape) -> f64 {
    if d.alphabet < 2 || d.length == 0 {
        return 0.0;
    }
    let n = f64::from(d.alphabet);
    let k = d.length as u64;
    let m = u64::from(d.misses);
    let guesses = [d.window, d.clients, d.epochs, d.purposes, d.doors_sharing, ATTEMPTS_PER_FIRST_KNOCK]
        .iter()
        .map(|&x| f64::from(x.max(1)).log2())
        .sum::<f64>();
    let bits = n.log2() + (k - 1) as f64 * (n - 1.0).log2() - guesses - log2_binomial(k + m, m);
    bits.max(0.0)
}

/// What is left to an on-path attacker who sees the knocks and can drop packets:
/// 0 without `bind_source`; with it, (K-1)·log2(N-1) - log2(A) - log2 C(K-1+m, m).
pub fn on_path_bits(d: &DoorShape) -> f64 {
    if !d.bind_source || d.alphabet < 2 || d.length < 2 {
        return 0.0;
    }
    let k = d.length as u64;
    let m = u64::from(d.misses);
    let bits = (k - 1) as f64 * (f64::from(d.alphabet) - 1.0).log2()
        - f64::from(ATTEMPTS_PER_FIRST_KNOCK).log2()
        - log2_binomial(k - 1 + m, m);
    bits.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_door() -> DoorShape {
        DoorShape {
            alphabet: 2048,
            length: 8,
            window: 10,
            clients: 1,
            epochs: 3,
            purposes: 1,
            doors_sharing: 1,
            misses: 2,
            bind_source: false,
        }
    }

    #[test]
    fn default_door_matches_the_protocol_document() {
        let bits = off_path_bits(&default_door());
        assert!((bits - 76.6).abs() < 0.05, "{bits}");
        assert!(bits >= 64.0);
        assert_eq!(on_path_bits(&default_door()), 0.0);
    }

    #[test]
    fn every_multiplier_costs_bits() {
        let base = off_path_bits(&default_door());
        let more_clients = off_path_bits(&DoorShape { clients: 16, ..default_door() });
        assert!((base - more_clients - 4.0).abs() < 1e-9);
        let closing = off_path_bits(&DoorShape { purposes: 2, ..default_door() });
        assert!((base - closing - 1.0).abs() < 1e-9);
        let bound = on_path_bits(&DoorShape { bind_source: true, ..default_door() });
        assert!(bound > 70.0, "{bound}");
    }

    #[test]
    fn binomial() {
        assert!((log2_binomial(10, 2) - 45f64.log2()).abs() < 1e-9);
        assert_eq!(log2_binomial(5, 0), 0.0);
    }
}
