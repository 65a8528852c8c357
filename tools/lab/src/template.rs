//! Flood frame templates: one frame built once with [`build_frame`], then for
//! every packet only the source address, ports, sequence number / IP
//! identification and the checksums are patched in place.

use std::net::IpAddr;

use crate::frame::{build_frame, internet_checksum, transport_checksum, FrameSpec, Proto};

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;

/// A pre-built frame of one protocol and address family.
pub struct Template {
    frame: Vec<u8>,
    dst: IpAddr,
    proto: Proto,
    l4: usize,
}

impl Template {
    /// Builds the frame for `spec`; later packets change only the patched fields.
    pub fn new(spec: &FrameSpec<'_>) -> Result<Self, String> {
        let mut frame = Vec::with_capacity(128);
        build_frame(spec, &mut frame)?;
        let l4 = ETH_LEN + if spec.dst.is_ipv4() { IPV4_LEN } else { IPV6_LEN };
        Ok(Template { frame, dst: spec.dst, proto: spec.proto, l4 })
    }

    /// The frame with these fields patched in (`src` must be of the template's family).
    pub fn fill(&mut self, src: IpAddr, src_port: u16, dst_port: u16, seq: u32, ip_id: u16) -> &[u8] {
        let f = &mut self.frame;
        match src {
            IpAddr::V4(a) if self.dst.is_ipv4() => {
                f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&ip_id.to_be_bytes());
                f[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&a.octets());
                f[ETH_LEN + 10..ETH_LEN + 12].fill(0);
                let csum = internet_checksum(&f[ETH_LEN..ETH_LEN + IPV4_LEN]);
                f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&csum.to_be_bytes());
            }
            IpAddr::V6(a) if !self.dst.is_ipv4() => f[ETH_LEN + 8..ETH_LEN + 24].copy_from_slice(&a.octets()),
            _ => panic!("template for {} filled with source {src} of the other family", self.dst),
        }
        let l4 = self.l4;
        f[l4..l4 + 2].copy_from_slice(&src_port.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&dst_port.to_be_bytes());
        let at = match self.proto {
            Proto::Tcp => {
                f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                l4 + 16
            }
            Proto::Udp => l4 + 6,
        };
        f[at..at + 2].fill(0);
        let mut csum = transport_checksum(src, self.dst, self.proto.number(), &f[l4..]);
        if self.proto == Proto::Udp && csum == 0 {
            csum = 0xffff;
        }
        f[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        &self.frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Mac;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn spec<'a>(src: IpAddr, dst: IpAddr, proto: Proto, ports: (u16, u16), seq: u32, id: u16) -> FrameSpec<'a> {
        FrameSpec {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src,
            dst,
            proto,
            src_port: ports.0,
            dst_port: ports.1,
            seq,
            ip_id: id,
            payload: match proto {
                Proto::Tcp => b"",
                Proto::Udp => b"flood",
            },
        }
    }

    #[test]
    fn patched_frames_equal_freshly_built_ones() {
        let mut rng = SmallRng::seed_from_u64(7);
        let pairs: [(IpAddr, IpAddr); 2] = [
            ("198.18.0.0".parse().unwrap(), "198.18.88.2".parse().unwrap()),
            ("2001:db8::".parse().unwrap(), "2001:db8::2".parse().unwrap()),
        ];
        for (base, dst) in pairs {
            for proto in [Proto::Tcp, Proto::Udp] {
                let mut t = Template::new(&spec(base, dst, proto, (1, 2), 3, 4)).unwrap();
                for _ in 0..500 {
                    let src = match base {
                        IpAddr::V4(_) => IpAddr::V4(rng.random::<u32>().into()),
                        IpAddr::V6(_) => IpAddr::V6(rng.random::<u128>().into()),
                    };
                    let (sp, dp, seq, id) = (rng.random(), rng.random(), rng.random(), rng.random());
                    let mut want = Vec::new();
                    build_frame(&spec(src, dst, proto, (sp, dp), seq, id), &mut want).unwrap();
                    assert_eq!(t.fill(src, sp, dp, seq, id), want.as_slice(), "{src} {proto}");
                }
            }
        }
    }
}
