//! [`RuntimeRouter`]: one `ActionRuntime` over two, so the agent runs the
//! built-ins natively and everything else in containers.

use crate::native::NativeRuntime;
use async_trait::async_trait;
use std::sync::Arc;
use tinker_core::Result;
use tinker_core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, OutputSink};

/// Routes each action to the native runtime when its image names a built-in, and
/// to the container runtime otherwise.
#[derive(Debug)]
pub struct RuntimeRouter {
    /// The built-ins.
    pub native: NativeRuntime,
    /// Containers, when an engine is there.
    pub containers: Option<Arc<dyn ActionRuntime>>,
}

#[async_trait]
impl ActionRuntime for RuntimeRouter {
    async fn run(
        &self,
        spec: &ActionSpec,
        out: &dyn OutputSink,
        cancel: &CancelToken,
    ) -> Result<ActionOutcome> {
        if self.native.builtin(&spec.image).is_some() {
            return self.native.run(spec, out, cancel).await;
        }
        match &self.containers {
            Some(c) => c.run(spec, out, cancel).await,
            None => Ok(ActionOutcome::Failed {
                exit_code: None,
                message: format!(
                    "{} is not a built-in action and no container engine is available",
                    spec.image
                ),
            }),
        }
    }
}
