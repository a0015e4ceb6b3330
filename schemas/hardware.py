"""`hardware:` what the job runs on, and the memory budget the plan must fit."""

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section
from .units import ByteSize

# GPUs without native bfloat16 (pre-Ampere): bf16 there is emulated or refused.
MAX_NODES, MAX_DEVICES_PER_NODE, MAX_WORLD_SIZE = 1024, 256, 8192  # the planner works per device
NO_BF16_GPUS = ("V100", "T4", "P100", "P40", "P4", "K80", "M60", "GTX1080", "RTX2080", "TITANV", "TITANRTX")


class RendezvousSpec(Section):
    """Where the nodes of a multi-node job meet, and how long they wait for each other."""

    address: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", max_length=253,
        description="Host of node 0 that the other nodes join; MASTER_ADDR (or the first host of "
        "SLURM_JOB_NODELIST) at launch wins. null: taken from the environment only.")
    port: int = Field(29500, ge=1, le=65535, description="Rendezvous TCP port on that host; MASTER_PORT at "
                      "launch wins.")
    join_timeout: int = Field(600, ge=1, le=86400, description="Seconds the nodes wait for each other at "
                              "start before the launch fails.")
    peer_timeout: int = Field(600, ge=10, le=86400, description="Seconds a rank waits on a silent peer in a "
                              "collective before the job fails (a lost node whose connections stay open).")


class HardwareSpec(Section):
    accelerator: Literal["cuda", "cpu"] = Field("cuda", description="Device kind every rank trains on.")
    gpu: str | None = Field(
        None, description="GPU model (e.g. A100, H100, V100); lets qcompile warn about missing bf16 support."
    )
    nodes: int = Field(1, ge=1, le=MAX_NODES, description=f"Number of machines (at most {MAX_NODES}).")
    devices_per_node: int = Field(
        1, ge=1, le=MAX_DEVICES_PER_NODE,
        description="Devices (GPUs, or CPU processes when accelerator is cpu) on each machine."
    )
    device_memory: ByteSize = Field(
        description="Memory of one device, e.g. 80GiB. Units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.")
    host_memory: ByteSize = Field(description="Host RAM of one node, e.g. 1007GB.")
    disk: ByteSize | None = Field(
        None, description="Free disk for offloaded parameters and checkpoints; null = unchecked.")
    time_limit: str = Field("24:00:00", pattern=r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$", description="Wall-clock "
                            "limit of the SLURM job (slurm.sbatch's --time), e.g. 2-00:00:00.")
    rendezvous: RendezvousSpec = Field(default_factory=RendezvousSpec, description="How the nodes of a "
                                       "multi-node job find each other (ignored on one node).")

    @model_validator(mode="after")
    def _world_size(self):
        if self.world_size > MAX_WORLD_SIZE:
            raise ValueError(f"nodes x devices_per_node = {self.world_size} devices; at most {MAX_WORLD_SIZE}")
        return self

    @property
    def world_size(self) -> int:
        return self.nodes * self.devices_per_node
