"""Roboflow Workflow specifications compiled into the project's own pipeline (compile_workflow, WorkflowError)."""

from pipelines.workflows.compile import CompiledWorkflow, compile_workflow
from pipelines.workflows.spec import WorkflowError

__all__ = ["CompiledWorkflow", "WorkflowError", "compile_workflow"]
