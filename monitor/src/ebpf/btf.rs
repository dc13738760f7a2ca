//! A minimal reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just enough to
//! find struct member offsets by name and the arity of a tracepoint.
//!
//! Why our own: aya compiles Rust eBPF without CO-RE, so the programs walk
//! `task->nsproxy->mnt_ns->ns.inum` with offsets computed here and handed
//! over as globals ([`KernelOffsets`]). The format is documented in the
//! kernel's `Documentation/bpf/btf.rst`: a header, a type section (records of
//! `struct btf_type` followed by kind-specific data) and a string section.
//!
//! Owns: parsing and lookups. Imports only std and `monitor_common`.

use std::collections::HashMap;
use std::path::Path;

use monitor_common::KernelOffsets;

/// Where the running kernel exposes its own BTF (`CONFIG_DEBUG_INFO_BTF`).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

// BTF_KIND_* from include/uapi/linux/btf.h.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why BTF could not be read or a member not found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("BTF struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("BTF member `{strukt}.{member}` is a bitfield")]
    Bitfield { strukt: String, member: String },
}

/// One member of a struct or union.
#[derive(Clone, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the enclosing struct.
    bit_offset: u32,
    /// Non-zero for a bitfield (only when the struct's kind_flag is set).
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
enum Data {
    /// STRUCT or UNION.
    Members(Vec<Member>),
    /// FUNC_PROTO: parameter type ids, in order.
    Params(Vec<u32>),
    /// PTR, TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG: the type referred to.
    Ref(u32),
    None,
}

#[derive(Clone, Debug)]
struct Type {
    name_off: u32,
    /// `BTF_KIND_*`.
    kind: u32,
    data: Data,
}

/// Parsed BTF: types by id (id 0 is `void`) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// First struct or union of each name; kernel BTF is deduplicated, so a
    /// name maps to one complete definition.
    structs: HashMap<Vec<u8>, u32>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads and parses the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&bytes)
    }

    /// Parses a little-endian BTF blob (the only byte order we build for).
    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(b, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Malformed("header too short"));
        }
        let section = |off_at: usize| -> Result<&[u8], BtfError> {
            let off = u32_at(b, off_at)? as usize;
            let len = u32_at(b, off_at + 4)? as usize;
            let start = hdr_len
                .checked_add(off)
                .ok_or(BtfError::Malformed("section offset"))?;
            let end = start
                .checked_add(len)
                .ok_or(BtfError::Malformed("section length"))?;
            b.get(start..end)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_sec = section(8)?;
        let strings = section(16)?.to_vec();

        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            data: Data::None,
        }];
        let mut at = 0;
        while at < type_sec.len() {
            let name_off = u32_at(type_sec, at)?;
            let info = u32_at(type_sec, at + 4)?;
            let size_or_type = u32_at(type_sec, at + 8)?;
            at += TYPE_LEN;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let kind = (info >> 24) & 0x1f;
            let (data, extra) = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(type_sec, m + 8)?;
                        // With kind_flag the offset packs the bitfield size in
                        // its top 8 bits (btf.rst, "BTF_KIND_STRUCT").
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0xff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name_off: u32_at(type_sec, m)?,
                            type_id: u32_at(type_sec, m + 4)?,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    (Data::Members(members), vlen * 12)
                }
                KIND_FUNC_PROTO => {
                    let params = (0..vlen)
                        .map(|i| u32_at(type_sec, at + i * 8 + 4))
                        .collect::<Result<Vec<_>, _>>()?;
                    (Data::Params(params), vlen * 8)
                }
                KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_TYPE_TAG => (Data::Ref(size_or_type), 0),
                KIND_INT | KIND_VAR | KIND_DECL_TAG => (Data::None, 4),
                KIND_ARRAY => (Data::None, 12),
                KIND_ENUM => (Data::None, vlen * 8),
                KIND_DATASEC | KIND_ENUM64 => (Data::None, vlen * 12),
                KIND_FWD | KIND_FUNC | KIND_FLOAT => (Data::None, 0),
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                data,
            });
        }
        if at != type_sec.len() {
            return Err(BtfError::Malformed("type section overruns"));
        }

        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) {
                if let Some(name) = btf.name(t.name_off).filter(|n| !n.is_empty()) {
                    btf.structs.entry(name.to_vec()).or_insert(id as u32);
                }
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> Option<&[u8]> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        Some(&rest[..end])
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Strips typedefs and qualifiers, not pointers, off a type id.
    fn resolve(&self, mut id: u32) -> u32 {
        // Bounded: a corrupt blob could loop.
        for _ in 0..32 {
            match self.get(id) {
                Some(Type {
                    kind,
                    data: Data::Ref(next),
                    ..
                }) if *kind != KIND_PTR => id = *next,
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `strukt.member`, looking through anonymous struct and
    /// union members (the kernel nests fields in them: `ns_common` wraps its
    /// fields in anonymous unions on 6.18, `task_struct` under randstruct).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(strukt.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        let found = self.member_bits(id, member.as_bytes(), 0);
        let err = |bitfield: bool| {
            let (strukt, member) = (strukt.to_string(), member.to_string());
            if bitfield {
                BtfError::Bitfield { strukt, member }
            } else {
                BtfError::NoMember { strukt, member }
            }
        };
        match found {
            Some((bits, 0)) if bits.is_multiple_of(8) => Ok(bits / 8),
            Some(_) => Err(err(true)),
            None => Err(err(false)),
        }
    }

    /// (bit offset, bitfield size) of a member, adding the offsets of the
    /// anonymous members it sits in. Named members win over nested ones,
    /// as in C name lookup.
    fn member_bits(&self, struct_id: u32, member: &[u8], depth: u32) -> Option<(u32, u32)> {
        let Some(Type {
            data: Data::Members(members),
            ..
        }) = self.get(struct_id)
        else {
            return None;
        };
        if let Some(m) = members
            .iter()
            .find(|m| self.name(m.name_off) == Some(member))
        {
            return Some((m.bit_offset, m.bitfield_size));
        }
        if depth >= 8 {
            return None;
        }
        members
            .iter()
            .filter(|m| self.name(m.name_off) == Some(b""))
            .find_map(|m| {
                let (bits, size) = self.member_bits(self.resolve(m.type_id), member, depth + 1)?;
                Some((m.bit_offset + bits, size))
            })
    }

    /// Number of arguments a raw tracepoint passes to `tp_btf`/`raw_tp`
    /// programs, read from the `btf_trace_<name>` typedef the kernel emits for
    /// each tracepoint: a pointer to a prototype whose first parameter is the
    /// tracepoint's private `void *data`, followed by its `TP_PROTO` arguments.
    pub fn tracepoint_arity(&self, name: &str) -> Option<usize> {
        let typedef = format!("btf_trace_{name}");
        let t = self.types.iter().find(|t| {
            t.kind == KIND_TYPEDEF && self.name(t.name_off) == Some(typedef.as_bytes())
        })?;
        let Data::Ref(ptr) = t.data else { return None };
        let Some(Type {
            kind: KIND_PTR,
            data: Data::Ref(proto),
            ..
        }) = self.get(ptr)
        else {
            return None;
        };
        match &self.get(*proto)?.data {
            Data::Params(params) => Some(params.len().saturating_sub(1)),
            _ => None,
        }
    }
}

/// Computes the offsets the programs need to read the current task's mount
/// namespace and a task's ids.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        task_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: btf.member_offset("nsproxy", "mnt_ns")?,
        // `mnt_namespace.ns` is embedded (not a pointer): add the offsets.
        mnt_ns_inum: btf.member_offset("mnt_namespace", "ns")?
            + btf.member_offset("ns_common", "inum")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_exit_code: btf.member_offset("task_struct", "exit_code")?,
        task_signal: btf.member_offset("task_struct", "signal")?,
        // `live` is an `atomic_t`, whose only member `counter` is at 0.
        signal_live: btf.member_offset("signal_struct", "live")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob type by type, the way pahole lays it out.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn push(
            &mut self,
            name: &str,
            kind: u32,
            vlen: usize,
            kind_flag: bool,
            size_or_type: u32,
        ) -> u32 {
            let name = self.str(name);
            let info = (kind << 24) | vlen as u32 | (u32::from(kind_flag) << 31);
            for v in [name, info, size_or_type] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.push(name, KIND_INT, 0, false, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.push("", KIND_PTR, 0, false, to)
        }

        /// Members as (name, type, bit offset, bitfield size).
        fn strukt(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kind_flag = members.iter().any(|m| m.3 != 0);
            let id = self.push(name, kind, members.len(), kind_flag, size);
            for &(m, ty, bits, bitfield) in members {
                let m = self.str(m);
                let off = if kind_flag {
                    bits | (bitfield << 24)
                } else {
                    bits
                };
                for v in [m, ty, off] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }

        fn finish(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let type_len = self.types.len() as u32;
            for v in [
                HEADER_LEN as u32,
                0,
                type_len,
                type_len,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature of the kernel's layout: `ns_common.inum` inside an
    /// anonymous union inside an anonymous struct, a typedef'd member type,
    /// a bitfield, and a tracepoint typedef.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u32_t = b.int("unsigned int", 4);
        let u64_t = b.int("long long unsigned int", 8);
        let inner = b.strukt(
            KIND_STRUCT,
            "",
            8,
            &[("ns_type", u32_t, 0, 0), ("inum", u32_t, 32, 0)],
        );
        let union = b.strukt(
            KIND_UNION,
            "",
            8,
            &[("", inner, 0, 0), ("raw", u64_t, 0, 0)],
        );
        let ns_common = b.strukt(
            KIND_STRUCT,
            "ns_common",
            24,
            &[("count", u64_t, 0, 0), ("", union, 128, 0)],
        );
        let typedef = b.push("ns_common_t", KIND_TYPEDEF, 0, false, ns_common);
        let mnt_ns = b.strukt(
            KIND_STRUCT,
            "mnt_namespace",
            64,
            &[("seq", u64_t, 0, 0), ("ns", typedef, 256, 0)],
        );
        let mnt_ns_ptr = b.ptr(mnt_ns);
        let nsproxy = b.strukt(
            KIND_STRUCT,
            "nsproxy",
            32,
            &[("count", u32_t, 0, 0), ("mnt_ns", mnt_ns_ptr, 64, 0)],
        );
        let nsproxy_ptr = b.ptr(nsproxy);
        let anon = b.strukt(
            KIND_STRUCT,
            "",
            16,
            &[("pid", u32_t, 0, 0), ("tgid", u32_t, 32, 0)],
        );
        let signal = b.strukt(
            KIND_STRUCT,
            "signal_struct",
            64,
            &[("nr_threads", u32_t, 0, 0), ("live", u32_t, 32, 0)],
        );
        let signal_ptr = b.ptr(signal);
        let task = b.strukt(
            KIND_STRUCT,
            "task_struct",
            4096,
            &[
                ("flags", u32_t, 0, 3),
                ("", anon, 1024, 0),
                ("nsproxy", nsproxy_ptr, 2048, 0),
                ("exit_code", u32_t, 2112, 0),
                ("signal", signal_ptr, 2176, 0),
            ],
        );
        let void_ptr = b.ptr(0);
        let task_ptr = b.ptr(task);
        let proto = b.push("", KIND_FUNC_PROTO, 3, false, 0);
        for ty in [void_ptr, task_ptr, u32_t] {
            b.types.extend_from_slice(&0u32.to_le_bytes());
            b.types.extend_from_slice(&ty.to_le_bytes());
        }
        let proto_ptr = b.ptr(proto);
        b.push(
            "btf_trace_sched_process_exit",
            KIND_TYPEDEF,
            0,
            false,
            proto_ptr,
        );
        b.finish()
    }

    #[test]
    fn finds_offsets_through_anonymous_members_and_typedefs() {
        let btf = Btf::parse(&sample()).unwrap();
        let offsets = kernel_offsets(&btf).unwrap();
        assert_eq!(offsets.task_nsproxy, 256);
        assert_eq!(offsets.nsproxy_mnt_ns, 8);
        // mnt_namespace.ns at 32, ns_common's anonymous union at 16, inum at 4.
        assert_eq!(offsets.mnt_ns_inum, 32 + 16 + 4);
        assert_eq!(offsets.task_pid, 128);
        assert_eq!(offsets.task_tgid, 132);
        assert_eq!(
            (
                offsets.task_exit_code,
                offsets.task_signal,
                offsets.signal_live
            ),
            (264, 272, 4)
        );
    }

    #[test]
    fn reports_what_is_missing() {
        let btf = Btf::parse(&sample()).unwrap();
        assert!(
            matches!(btf.member_offset("cred", "uid"), Err(BtfError::NoStruct(s)) if s == "cred")
        );
        assert!(matches!(
            btf.member_offset("nsproxy", "net_ns"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("task_struct", "flags"),
            Err(BtfError::Bitfield { .. })
        ));
    }

    #[test]
    fn counts_tracepoint_arguments() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.tracepoint_arity("sched_process_exit"), Some(2));
        assert_eq!(btf.tracepoint_arity("sched_process_fork"), None);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
        let mut blob = sample();
        // Claim a longer type section than the blob holds.
        blob[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Btf::parse(&blob).is_err());
        // Every truncation fails cleanly.
        let full = sample();
        for len in 0..full.len() {
            let _ = Btf::parse(&full[..len]);
        }
    }

    /// Against the running kernel: the offsets must be plausible and agree
    /// with each other. (The probes test checks them end to end against
    /// `readlink /proc/PID/ns/mnt`.)
    #[test]
    #[ignore = "needs /sys/kernel/btf/vmlinux"]
    fn parses_the_running_kernel() {
        let btf = Btf::from_sys_fs().unwrap();
        let o = kernel_offsets(&btf).unwrap();
        assert!(
            o.task_nsproxy > 0 && o.task_nsproxy.is_multiple_of(8),
            "{o:?}"
        );
        assert_eq!(
            o.task_tgid,
            o.task_pid + 4,
            "pid and tgid sit side by side: {o:?}"
        );
        assert_eq!(btf.tracepoint_arity("task_newtask"), Some(2));
        assert_eq!(btf.tracepoint_arity("sched_process_fork"), Some(2));
        assert!(matches!(
            btf.tracepoint_arity("sched_process_exit"),
            Some(1 | 2)
        ));
    }
}
