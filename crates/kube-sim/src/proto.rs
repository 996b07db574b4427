//! Just enough of the Kubernetes protobuf wire format to read `DeleteOptions`.
//!
//! The simulator answers JSON only, but kubectl's typed clientset *sends* protobuf bodies
//! (`Content-Type: application/vnd.kubernetes.protobuf`) on some paths. The one that matters
//! for drains: `kubectl drain --disable-eviction`, and drain's fallback when `pods/eviction`
//! is not in discovery, delete each pod with a protobuf `DeleteOptions` body. A real server
//! accepts it; client-go has no JSON fallback for protobuf, so the simulator must read it.
//!
//! Envelope (apimachinery `runtime/serializer/protobuf`): the 4 bytes `k8s\0`, then a
//! `runtime.Unknown` message {1: typeMeta {1: apiVersion, 2: kind}, 2: raw, 3:
//! contentEncoding, 4: contentType}; `raw` is the `DeleteOptions` message {1:
//! gracePeriodSeconds int64, 2: preconditions {1: uid, 2: resourceVersion}, 3:
//! orphanDependents bool, 4: propagationPolicy, 5: dryRun repeated string}.

use crate::errors::ApiError;
use crate::ops::{DeleteOptions, Preconditions};

/// The media type of protobuf request bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// The (field number, value) pairs of one message, in wire order.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                pos += if key & 7 == 1 { 8 } else { 4 };
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    (pos == buf.len()).then_some(out)
}

fn string(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

/// Reads a protobuf-encoded `DeleteOptions` request body.
pub fn delete_options(body: &[u8]) -> Result<DeleteOptions, ApiError> {
    decode_delete_options(body).ok_or_else(|| {
        ApiError::bad_request("couldn't decode DeleteOptions from the protobuf request body")
    })
}

fn decode_delete_options(body: &[u8]) -> Option<DeleteOptions> {
    let unknown = fields(body.strip_prefix(MAGIC)?)?;
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in unknown {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (m, g) in fields(type_meta)? {
                    if let (2, Field::Bytes(k)) = (m, g) {
                        kind = string(k)?;
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    if kind != "DeleteOptions" {
        return None;
    }
    let mut opts = DeleteOptions::default();
    for (n, f) in fields(raw)? {
        match (n, f) {
            // int64 is two's complement in a varint.
            (1, Field::Varint(v)) => opts.grace_period_seconds = Some(v as i64),
            (2, Field::Bytes(p)) => {
                let mut pre = Preconditions::default();
                for (m, g) in fields(p)? {
                    match (m, g) {
                        (1, Field::Bytes(uid)) => pre.uid = Some(string(uid)?),
                        (2, Field::Bytes(rv)) => pre.resource_version = Some(string(rv)?),
                        _ => {}
                    }
                }
                opts.preconditions = Some(pre);
            }
            (4, Field::Bytes(p)) => opts.propagation_policy = Some(string(p)?),
            (5, Field::Bytes(d)) => opts.dry_run.get_or_insert_with(Vec::new).push(string(d)?),
            _ => {}
        }
    }
    Some(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubectl_drain_delete_options() {
        // kubectl drain --disable-eviction --grace-period=5, as captured with -v=9.
        let body =
            b"k8s\x00\x0a\x13\x0a\x02v1\x12\x0dDeleteOptions\x12\x02\x08\x05\x1a\x00\x22\x00";
        let opts = delete_options(body).expect("decodes");
        assert_eq!(opts.grace_period_seconds, Some(5));
        assert!(opts.preconditions.is_none());
        assert!(opts.dry_run.is_none());
    }

    #[test]
    fn reads_preconditions_policy_dry_run_and_negative_grace() {
        let mut raw = vec![0x08];
        raw.extend_from_slice(&[0xff; 9]);
        raw.push(0x01); // -1
        raw.extend_from_slice(b"\x12\x05\x0a\x03abc\x22\x0aBackground\x2a\x03All");
        let mut unknown = b"\x0a\x13\x0a\x02v1\x12\x0dDeleteOptions\x12".to_vec();
        unknown.push(raw.len() as u8);
        unknown.extend_from_slice(&raw);
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&unknown);
        let opts = delete_options(&body).expect("decodes");
        assert_eq!(opts.grace_period_seconds, Some(-1));
        assert_eq!(
            opts.preconditions.and_then(|p| p.uid).as_deref(),
            Some("abc")
        );
        assert_eq!(opts.propagation_policy.as_deref(), Some("Background"));
        assert_eq!(opts.dry_run, Some(vec!["All".to_string()]));
    }

    #[test]
    fn rejects_other_kinds_and_garbage() {
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(b"\x0a\x0e\x0a\x02v1\x12\x08Eviction\x12\x00");
        assert!(delete_options(&body).is_err());
        assert!(delete_options(b"{\"gracePeriodSeconds\":1}").is_err());
        assert!(delete_options(b"k8s\0\x0a\xff").is_err());
    }
}
