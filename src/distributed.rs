//! The processes a data-parallel run spans: this process alone, or the ranks an MPI launcher
//! started (`mpirun -np R convnet train --parallel data ...`, cargo feature `mpi`, over the
//! system's MPI library through the `mpi` crate). Each rank drives its own devices; the
//! gradients are summed across ranks with MPI's collectives after each rank has summed its own
//! replicas ([`crate::gpu::DataParallel`]).
//!
//! Every collective here leaves the same bits on every rank: sums are reduced to rank 0 and
//! broadcast from it rather than all-reduced (MPI does not promise that an all-reduce gives
//! every rank the same floating-point result), so replicas on different ranks apply the same
//! update to the same values and stay equal.

use crate::error::Result;

/// This process's place among the processes of one run.
pub struct World {
    #[cfg(feature = "mpi")]
    mpi: Option<mpi::environment::Universe>,
}

impl World {
    /// This process alone.
    pub fn single() -> Self {
        World {
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The ranks of an MPI launch when this process was started by one with more than one
    /// process (Open MPI's `mpirun` or a PMI launcher: their environment variables say so) and
    /// built with the `mpi` feature; this process alone otherwise. A launch seen without the
    /// feature is an error, not a run of R processes each believing it is alone.
    pub fn from_environment() -> Result<Self> {
        // A launch of more than one process: a launcher also starts single processes (Slurm's
        // `srun -n1`), which need no MPI. PMIx launchers name the rank, not the size: under
        // Slurm, the step's task count says it.
        let more_than_one = |name: &str| {
            std::env::var(name).is_ok_and(|size| size.trim().parse::<usize>().is_ok_and(|n| n > 1))
        };
        let pmix = std::env::var_os("PMIX_RANK").is_some();
        let launched = more_than_one("OMPI_COMM_WORLD_SIZE")
            || more_than_one("PMI_SIZE")
            || (pmix && (more_than_one("SLURM_STEP_NUM_TASKS") || more_than_one("SLURM_NTASKS")));
        if !launched {
            return Ok(World::single());
        }
        #[cfg(feature = "mpi")]
        {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or_else(|| {
                    crate::Error::InvalidArgument("MPI was already initialised".into())
                })?;
            Ok(World {
                mpi: Some(universe),
            })
        }
        #[cfg(not(feature = "mpi"))]
        Err(crate::Error::InvalidArgument(
            "started by an MPI launcher, but this build has no MPI: build with --features mpi"
                .into(),
        ))
    }

    /// This process's rank, 0 to [`World::size`] - 1.
    pub fn rank(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::traits::Communicator;
            return universe.world().rank() as usize;
        }
        0
    }

    /// How many processes the run spans.
    pub fn size(&self) -> usize {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::traits::Communicator;
            return universe.world().size() as usize;
        }
        1
    }

    /// Replaces `values` on every rank by their sum over the ranks (`scratch`, as long, holds
    /// rank 0's result before it is sent).
    pub fn sum(&self, values: &mut [f32], scratch: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::collective::SystemOperation;
            use mpi::traits::{Communicator, Root};
            let world = universe.world();
            let root = world.process_at_rank(0);
            let scratch = &mut scratch[..values.len()];
            if world.rank() == 0 {
                root.reduce_into_root(&*values, scratch, SystemOperation::sum());
                values.copy_from_slice(scratch);
            } else {
                root.reduce_into(&*values, SystemOperation::sum());
            }
            root.broadcast_into(values);
        }
        let _ = (values, scratch);
    }

    /// Replaces `values` on every rank by their sum over the ranks.
    pub fn sum_f64s(&self, values: &mut [f64]) {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::collective::SystemOperation;
            use mpi::traits::{Communicator, Root};
            let world = universe.world();
            let root = world.process_at_rank(0);
            if world.rank() == 0 {
                let mut sum = vec![0.0f64; values.len()];
                root.reduce_into_root(&*values, &mut sum[..], SystemOperation::sum());
                values.copy_from_slice(&sum);
            } else {
                root.reduce_into(&*values, SystemOperation::sum());
            }
            root.broadcast_into(values);
        }
        let _ = values;
    }

    /// `value` summed over the ranks.
    pub fn sum_f64(&self, value: f64) -> f64 {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::collective::SystemOperation;
            use mpi::traits::{Communicator, Root};
            let world = universe.world();
            let root = world.process_at_rank(0);
            let mut sum = 0.0f64;
            if world.rank() == 0 {
                root.reduce_into_root(&value, &mut sum, SystemOperation::sum());
            } else {
                root.reduce_into(&value, SystemOperation::sum());
            }
            root.broadcast_into(&mut sum);
            return sum;
        }
        value
    }

    /// Replaces `values` on every rank by rank 0's.
    pub fn broadcast(&self, values: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::traits::{Communicator, Root};
            universe.world().process_at_rank(0).broadcast_into(values);
        }
        let _ = values;
    }

    /// Every rank's `values` (`counts[r]` of them from rank r), concatenated in rank order, on
    /// every rank.
    pub fn gather_f32s(&self, values: &[f32], counts: &[usize]) -> Vec<f32> {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::datatype::PartitionMut;
            use mpi::traits::CommunicatorCollectives;
            let counts: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
            let displs: Vec<i32> = (counts.iter())
                .scan(0, |at, &c| {
                    let start = *at;
                    *at += c;
                    Some(start)
                })
                .collect();
            let mut all = vec![0.0f32; counts.iter().map(|&c| c as usize).sum()];
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            universe
                .world()
                .all_gather_varcount_into(values, &mut partition);
            return all;
        }
        let _ = counts;
        values.to_vec()
    }

    /// Every rank's `value`, in rank order, on every rank.
    pub fn gather(&self, value: u32) -> Vec<u32> {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::traits::{Communicator, CommunicatorCollectives};
            let world = universe.world();
            let mut all = vec![0u32; world.size() as usize];
            world.all_gather_into(&value, &mut all[..]);
            return all;
        }
        vec![value]
    }

    /// Ends every rank of the run with `code` (an error on one rank must not leave the others
    /// waiting in a collective).
    pub fn abort(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if let Some(universe) = &self.mpi {
            use mpi::traits::Communicator;
            universe.world().abort(code);
        }
        let _ = code;
    }
}
