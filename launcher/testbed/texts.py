"""Configuration text the testbed writes: slurm.conf and the nodes' /etc/hosts (pure)."""

from __future__ import annotations

from launcher.testbed.layout import EPILOG, LOGS, MPIDOCK_BIN, RUN, STATE, Layout

# What each node says it has for jobs' --mem; the nodes share the machine's memory.
NODE_MEMORY_MB = 2048


def slurm_conf(layout: Layout) -> str:
    """slurm.conf for one slurmctld on the host and one slurmd per node namespace."""
    head = [
        "# Written by `mpidock testbed up`; removed by `mpidock testbed down`.",
        "ClusterName=mpidock",
        f"SlurmctldHost={layout.host_name}({layout.host_address})",
        "AuthType=auth/munge",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={STATE}/slurmctld",
        f"SlurmdSpoolDir={STATE}/%n/slurmd",
        # The nodes share the host's /tmp, where Slurm's PMIx plugin makes every step's
        # client directory (spmix_appdir_<uid>_<job>.<step>): the second node of a step
        # would find the first's and abort. Each node's own, as on a real cluster.
        f"TmpFS={STATE}/%n/tmp",
        f"SlurmctldPidFile={layout.slurmctld_pid}",
        f"SlurmdPidFile={RUN}/slurmd-%n.pid",
        f"SlurmctldLogFile={LOGS}/slurmctld.log",
        f"SlurmdLogFile={LOGS}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        # Slurm binds each task to the CPUs it was given, so a step's allocation is its
        # tasks' affinity, which the launcher gives its containers as their cpuset.
        "TaskPlugin=task/affinity",
        "MpiDefault=none",
        "ReturnToService=2",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "InactiveLimit=0",
        # As sites that keep users' jobs apart: squeue shows a user only their own jobs.
        "PrivateData=jobs",
        "KillWait=30",
        "MinJobAge=600",
        "SlurmdTimeout=300",
        "UnkillableStepTimeout=120",
        "MessageTimeout=30",
        f"Epilog={EPILOG}",
    ]
    # A RealMemory lets jobs ask for --mem (Slurm refuses more than a node has); memory is
    # not a consumable resource (CR_CPU), so jobs without --mem still share nodes.
    nodes = [
        f"NodeName={n.name} NodeAddr={n.address} CPUs={n.cpus} RealMemory={NODE_MEMORY_MB} "
        "State=UNKNOWN"
        for n in layout.nodes
    ]
    names = ",".join(n.name for n in layout.nodes)
    part = f"PartitionName=main Nodes={names} Default=YES MaxTime=INFINITE State=UP"
    return "\n".join([*head, *nodes, part]) + "\n"


def epilog_script() -> str:
    """The Epilog every slurmd runs as root when a job ends on its node: `mpidock reap`
    for that job, logged per node so tests can tell what the launcher itself left."""
    return (
        "#!/bin/sh\n"
        "# Written by `mpidock testbed up`: what a job left on this node goes as it ends.\n"
        f'exec {MPIDOCK_BIN} reap --job "$SLURM_JOB_ID" '
        f'>>"{LOGS}/epilog-$SLURMD_NODENAME.log" 2>&1\n'
    )


def hosts_file(layout: Layout) -> str:
    """The /etc/hosts every node sees: loopback, the host and every node."""
    lines = ["127.0.0.1\tlocalhost", f"{layout.host_address}\t{layout.host_name}"]
    lines += [f"{n.address}\t{n.name}" for n in layout.nodes]
    return "\n".join(lines) + "\n"
