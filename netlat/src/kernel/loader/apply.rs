//! Apply: load the eBPF object with the plan's globals and attach each ladder's best rung,
//! falling to the next rung when the kernel refuses one (the refusal is recorded in the
//! ladder, so the capabilities line says why).

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, KProbe, ProgramError, TracePoint},
};

use super::{
    LoadError,
    plan::{AttachPlan, Rung},
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netlat"));

/// Whether this binary carries its eBPF programs.
pub fn has_object() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// Why one program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {program} missing from the eBPF object")]
    NoProgram { program: &'static str },
    /// The object's program is not of the type the rung attaches.
    #[error("{source}")]
    ProgramType {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("verifier refused it: {source}")]
    Verifier {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attach failed: {source}")]
    Attach {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("kprobes unavailable on this kernel ({source})")]
    Kprobe {
        program: &'static str,
        function: &'static str,
        #[source]
        source: ProgramError,
    },
    /// The plan puts no tp_btf rung in reach without aya's BTF; kept for a plan built by hand.
    #[error("aya could not read /sys/kernel/btf/vmlinux")]
    NoAyaBtf,
}

/// Load the object and attach per `plan`, recording every refused rung into its ladder.
pub fn apply(plan: &mut AttachPlan, btf: Option<&Btf>) -> Result<Ebpf, LoadError> {
    let mut loader = EbpfLoader::new();
    loader.btf(btf);
    if let Some(bytes) = plan.ring_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    let mut ebpf = loader
        .override_global("CONFIG", &plan.config, true)
        .override_global("AYA_LOG_LEVEL", &plan.log_level, false)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Load)?;
    plan.climb(|rung| attach(&mut ebpf, rung, btf))
        .map_err(|why| LoadError::Essential { why })?;
    Ok(ebpf)
}

fn attach(ebpf: &mut Ebpf, rung: &Rung, btf: Option<&Btf>) -> Result<(), AttachError> {
    match *rung {
        Rung::TpBtf { program, event } => {
            let btf = btf.ok_or(AttachError::NoAyaBtf)?;
            let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
            prog.load(event, btf)
                .map_err(|source| AttachError::Verifier { program, source })?;
            prog.attach()
                .map_err(|source| AttachError::Attach { program, source })?;
        }
        Rung::Tracepoint {
            program,
            category,
            event,
        } => {
            let prog: &mut TracePoint = program_mut(ebpf, program)?;
            prog.load()
                .map_err(|source| AttachError::Verifier { program, source })?;
            prog.attach(category, event)
                .map_err(|source| AttachError::Attach { program, source })?;
        }
        Rung::Kprobes {
            programs,
            ref functions,
            ..
        } => {
            // As before the split, a failure leaves the programs before it attached; the
            // capabilities line reports the evidence missing.
            for p in programs {
                let program = p.program;
                let prog: &mut KProbe = program_mut(ebpf, program)?;
                prog.load()
                    .map_err(|source| AttachError::Verifier { program, source })?;
                for &function in functions {
                    prog.attach(function, 0)
                        .map_err(|source| AttachError::Kprobe {
                            program,
                            function,
                            source,
                        })?;
                }
            }
        }
        // Nothing to attach: the drop program names this evidence.
        Rung::DropLocation { .. } => {}
    }
    Ok(())
}

/// The object's program `program`, as the type a rung attaches.
fn program_mut<'a, P>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut P, AttachError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or(AttachError::NoProgram { program })?
        .try_into()
        .map_err(|source| AttachError::ProgramType { program, source })
}
