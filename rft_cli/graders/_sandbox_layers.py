"""Containment for a process about to run untrusted Python code (python graders now, tools later).

Standard library only and never imports `rft_cli`: the worker script loads it by file path, in a
`python -I` process whose parent is rft. Two steps, both before any untrusted code runs:

    enter(settings, announce, protocol_fds)   namespaces, and a PID namespace's init process
    contain(workdir, settings, namespaces)     rlimits, mounts, Landlock, capabilities, seccomp,
                                               the audit hook; returns the names of the layers held

Each layer is best effort; the caller reports the names it gets back, so a user can tell which
held. Which layer stops which attack, and what is left where one is missing: docs/guarantees.md.

    layer         stops                                              needs
    userns        (lets an unprivileged user create the others)      unprivileged user namespaces
    netns         every network connection (no interface but lo, down)  root or userns
    pidns         a process outliving the worker: the worker is the namespace's init, and the
                  kernel kills every process in it when init dies; other processes are invisible
    subreaper     (without pidns) orphaned descendants stay the worker's, so rft finds and kills them
    mountns       (holds tmpfs, readonly-fs and proc)                 root or userns
    tmpfs         a disk filled up: the working directory is a tmpfs of memory_mb, gone with the worker
    readonly-fs   writes, chmod, xattrs outside the working directory (every mount read-only)
    proc          /proc shows only the namespace's processes
    landlock      reads outside the Python installation, writes outside the working directory,
                  exec, TCP, signals and abstract sockets to outside processes   Linux >= 5.13
    seccomp       fork and every process creation but threads, exec, signals (so no self-stop),
                  ptrace, xattr writes, rlimit changes, mounts, namespaces, kernel keys, BPF,
                  io_uring, modules, reboot             Linux >= 3.17 on x86-64 or arm64
    no-capabilities  what root could do despite file permissions (run as root: all dropped)
    RLIMIT_*      memory (address space), file size, open files, core dumps; RLIMIT_NPROC=0 (new
                  processes) is listed only when not root, since the kernel exempts root
    audit         a PEP 578 hook: the same refusals at the Python level (not a boundary alone)
"""

import os
import resource
import select
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP = 1, 38, 22
_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_CHILD_SUBREAPER, _PR_CAP_AMBIENT = 24, 28, 36, 47
_SIGKILL = 9


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return ctypes, libc


# --- step 1: namespaces, and the PID namespace's init ----------------------------------------


def enter(settings, announce, protocol_fds):
    """Unshare what the kernel allows, then (in a PID namespace) fork: the child returns and runs
    the code as the namespace's init; this process stays outside as its supervisor and never returns.

    `announce(pid)` tells rft which process runs the code (rft watches its CPU time and kills it);
    `protocol_fds` are the pipes to rft, which the supervisor closes so that rft sees the end of the
    worker, not of the supervisor. Returns the namespaces entered.
    """
    skip = set(settings.get("disabled", ()))
    _die_with_parent(settings.get("parent"))
    namespaces = _unshare(skip) if sys.platform == "linux" else []
    if "pidns" not in namespaces:
        announce(os.getpid())
        return namespaces
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_write)
        _start_init(go_read)
        return namespaces + ["supervised"]
    os.close(go_read)
    announce(child)
    os.write(go_write, b"g")  # kept open: the child takes its end closing as this process's death
    for fd in protocol_fds:
        os.close(fd)
    _supervise(child)


def _die_with_parent(parent):
    """SIGKILL when rft (the thread that started this process) dies, even while stopped or spinning."""
    if sys.platform != "linux" or not parent:
        return
    try:
        _, libc = _libc()
    except OSError:
        return
    libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    if os.getppid() != int(parent):  # rft died before the signal was armed
        os._exit(1)


def _unshare(skip):
    try:
        _, libc = _libc()
    except OSError:
        return []
    entered = []
    # Not root: a user namespace first, in which this process holds the capabilities the others need.
    if os.geteuid() != 0 and "userns" not in skip and libc.unshare(CLONE_NEWUSER) == 0:
        entered.append("userns")
        _map_own_ids()
    wanted = [(n, f) for n, f in _NAMESPACES if n not in skip]
    if libc.unshare(sum(flag for _, flag in wanted)) == 0:  # all at once, else one by one
        return entered + [name for name, _ in wanted]
    for name, flag in wanted:
        if libc.unshare(flag) == 0:
            entered.append(name)
    return entered


_NAMESPACES = (("netns", CLONE_NEWNET), ("mountns", CLONE_NEWNS), ("pidns", CLONE_NEWPID))


def _map_own_ids():
    """Keep this user's uid and gid inside the user namespace (else they read as 65534)."""
    uid, gid = os.getuid(), os.getgid()
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{uid} {uid} 1"),
        ("gid_map", f"{gid} {gid} 1"),
    ):
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError:
            pass


_go: list[
    int
] = []  # in the child: the pipe on which the supervisor says it has announced this process


def _start_init(go_read):
    """In the child: die with the supervisor (its go-ahead is awaited in `contain`, meanwhile)."""
    try:
        _, libc = _libc()
        libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    except OSError:
        pass
    _go.append(go_read)


def _await_supervisor():
    """Before the first message to rft (its pid comes first) and before any user code: the
    supervisor keeps its end open for its whole life, so "g" then end-of-file means it died
    before the death signal was armed."""
    go_read = _go.pop()
    if os.read(go_read, 1) != b"g" or select.select([go_read], [], [], 0)[0]:
        os._exit(1)
    os.close(go_read)


def _supervise(child):
    """Wait for the namespace's init, then exit as it did (a signal s as 128 + s)."""
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


# --- step 2: the layers -------------------------------------------------------------------------


def contain(workdir, settings, namespaces):
    """Apply every layer this machine offers, in an order where each still has what it needs."""
    skip = set(settings.get("disabled", ()))
    layers = [n for n in namespaces if n not in ("mountns", "supervised")]
    layers += _apply_rlimits(int(settings["memory_mb"]))
    if sys.platform == "linux":  # the syscall numbers below are Linux's
        if "mountns" in namespaces:
            disk_mb = int(settings["memory_mb"])
            layers += _confine_mounts(workdir, "pidns" in namespaces, skip, disk_mb)
        if "pidns" not in namespaces and "subreaper" not in skip:
            layers += [x for x in [_become_subreaper()] if x]
        landlock = None if "landlock" in skip else _landlock(workdir)
        no_capabilities = None if "no-capabilities" in skip else _drop_capabilities()
        seccomp = None if "seccomp" in skip else _seccomp()
        layers += [layer for layer in (landlock, no_capabilities, seccomp) if layer]
    if "audit" not in skip:
        confined = any(x.startswith(("landlock", "readonly-fs")) for x in layers)
        layers.append(_install_audit_hook(workdir, files_confined=confined))
    if "supervised" in namespaces:
        _await_supervisor()
    return layers


def _apply_rlimits(memory_mb):
    applied = []
    # RLIMIT_AS (address space), not RLIMIT_RSS: Linux does not enforce the resident-set limit.
    # Address space counts reserved as well as touched memory, hence the generous memory_mb default.
    # RLIMIT_NPROC=0 is safe to set here because this process already exists; it only stops new ones.
    limits = [
        ("RLIMIT_AS", memory_mb * 1024 * 1024),
        ("RLIMIT_CORE", 0),
        ("RLIMIT_FSIZE", 64 * 1024 * 1024),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_NPROC", 0),
    ]
    for name, value in limits:
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            continue
        if name != "RLIMIT_NPROC" or os.geteuid() != 0:  # the kernel exempts root from NPROC
            applied.append(name)
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
    return applied


def _become_subreaper():
    """Outside a PID namespace: adopt orphaned descendants, so rft can find and kill every one."""
    try:
        _, libc = _libc()
    except OSError:
        return None
    return "subreaper" if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 else None


# --- mounts: a read-only view of the machine, and a /proc of this namespace only ----------------

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MOUNT_FLAGS = {
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
}
_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 1


def _confine_mounts(workdir, pidns, skip, disk_mb=1024):
    try:
        ctypes, libc = _libc()
    except OSError:
        return []
    mount = libc.mount
    mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    # Private first, so nothing done here propagates back to the machine's mounts.
    if mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return []
    path, layers = os.fsencode(workdir), []
    # The working directory becomes a tmpfs of `disk_mb`: what the code writes is bounded (a
    # file's size alone is, by RLIMIT_FSIZE) and gone with the namespace. Else a bind mount, so
    # that it can stay writable below a read-only root.
    size = f"size={int(disk_mb)}m,mode=0700".encode()
    if "tmpfs" not in skip and mount(b"tmpfs", path, b"tmpfs", _MS_NOSUID | _MS_NODEV, size) == 0:
        layers.append(f"tmpfs({int(disk_mb)} MiB)")
    elif mount(path, path, None, _MS_BIND | _MS_REC, None) != 0:
        return layers
    os.chdir(workdir)  # onto the new mount: the old working directory is the one beneath it
    if "readonly-fs" not in skip and _read_only_except(libc, path, skip):
        layers.append("readonly-fs")
    if pidns and "proc" not in skip:
        # A procfs mounted from inside the PID namespace lists only its processes.
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        if mount(b"proc", b"/proc", b"proc", flags, None) == 0:
            layers.append("proc")
    return layers


def _read_only_except(libc, path, skip):
    """Every mount read-only but the one at `path` (mount_setattr, else one remount each)."""
    import ctypes  # loaded by _libc already

    class MountAttr(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]

    def setattr_(target, attr, flags):
        return libc.syscall(_MOUNT_SETATTR, ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(target),
                            ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(32)) == 0  # fmt: skip

    if "mount_setattr" not in skip and setattr_(b"/", MountAttr(_MOUNT_ATTR_RDONLY), _AT_RECURSIVE):
        return setattr_(path, MountAttr(0, _MOUNT_ATTR_RDONLY), _AT_RECURSIVE)
    return _remount_each_read_only(libc.mount, os.fsdecode(path))


def _remount_each_read_only(mount, workdir):
    """Kernels before 5.12: remount each mount point read-only, keeping the flags it has (a user
    namespace may not clear nosuid, nodev or noexec)."""
    ok = True
    for point, options in _mount_points():
        if point == workdir or point.startswith(workdir + os.sep):
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        flags |= sum(_MOUNT_FLAGS.get(option, 0) for option in set(options.split(",")))
        if mount(None, os.fsencode(point), None, flags, None) != 0:
            ok = False
    return ok


def _mount_points():
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 5:  # octal escapes: a space in a mount point reads \040
            point = fields[4].encode("latin-1", "surrogateescape").decode("unicode_escape")
            yield point, fields[5]


# --- Landlock ----------------------------------------------------------------------------------


def _readable_roots():
    roots = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/proc/self",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/sys/devices/system/cpu",
        "/dev/urandom",
        "/dev/random",
    }
    roots.update(p for p in sys.path if p)
    return sorted(r for r in roots if os.path.exists(r))


_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # same on x86-64 and arm64
_WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 1, 1 << 2, 1 << 3


def _landlock(workdir):
    """Restrict the filesystem, TCP and signals with Landlock (Linux >= 5.13); None if unavailable."""
    try:
        ctypes, libc = _libc()
    except OSError:
        return None
    syscall = libc.syscall
    abi = syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return None
    # Landlock denies what the ruleset "handles" and no rule allows, so the ruleset handles every
    # filesystem right this kernel's ABI knows: anything the rules below do not grant is refused.
    handled_fs = (
        1 << {1: 13, 2: 14, 3: 15, 4: 15}.get(abi, 16)
    ) - 1  # every access right this ABI knows
    ruleset = _landlock_ruleset(syscall, abi, handled_fs)
    if ruleset < 0:
        return None
    file_rights = 0b111 | ((1 << 14) if abi >= 3 else 0) | ((1 << 15) if abi >= 5 else 0)
    rules = [(root, _READ_FILE | _READ_DIR) for root in _readable_roots()]
    rules += [(workdir, handled_fs & ~1), (os.devnull, _WRITE_FILE | _READ_FILE)]  # ~1: no execute
    for path, allowed in rules:
        _landlock_allow(
            syscall,
            ruleset,
            path,
            allowed if os.path.isdir(path) else allowed & file_rights,
        )
    # The kernel lets an unprivileged process restrict itself only once it can no longer gain
    # privileges (a setuid binary could otherwise run with the restrictions it does not expect).
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    ok = syscall(_LANDLOCK_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    os.close(ruleset)
    return f"landlock(abi {abi})" if ok else None


def _landlock_ruleset(syscall, abi, handled_fs):
    """A ruleset handling every filesystem right, TCP bind/connect (ABI 4) and signal/socket scoping (ABI 6)."""
    import ctypes  # loaded by _libc already

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    attr = RulesetAttr(handled_fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    return syscall(_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))


def _landlock_allow(syscall, ruleset, path, allowed):
    """Allow `allowed` beneath `path` (a missing path is skipped)."""
    import ctypes  # loaded by _libc already

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    rule = PathBeneath(allowed, fd)
    syscall(
        _LANDLOCK_ADD_RULE,
        ctypes.c_int(ruleset),
        ctypes.c_int(1),
        ctypes.byref(rule),
        ctypes.c_uint32(0),
    )
    os.close(fd)


# --- capabilities -------------------------------------------------------------------------------


def _drop_capabilities():
    """Drop every capability (it matters for root: no CAP_DAC_OVERRIDE, CAP_SYS_ADMIN, ...)."""
    if _effective_capabilities() == 0:
        return None
    try:
        ctypes, libc = _libc()
    except OSError:
        return None
    # Lock root out of regaining them: no capabilities for uid 0, none kept across setuid, no ambient.
    libc.prctl(_PR_SET_SECUREBITS, 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80, 0, 0, 0)
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # EINVAL: past the last capability this kernel knows
    libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: 0, twice (64 bits)
    libc.capset(ctypes.byref(header), ctypes.byref(data))
    return "no-capabilities" if _effective_capabilities() == 0 else None


def _effective_capabilities():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


# --- seccomp ------------------------------------------------------------------------------------

# Denied system calls: (x86-64, arm64) numbers; None where the architecture has no such call.
_DENIED = {
    "fork": (57, None), "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281),
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "kcmp": (312, 272), "process_madvise": (440, 440),
    "setxattr": (188, 5), "lsetxattr": (189, 6), "fsetxattr": (190, 7), "removexattr": (197, 14),
    "lremovexattr": (198, 15), "fremovexattr": (199, 16), "setxattrat": (463, 463),
    "removexattrat": (466, 466), "fchmod": (91, 52), "fchown": (93, 55),
    "setrlimit": (160, 164), "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40),
    "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51), "mount_setattr": (442, 442),
    "move_mount": (429, 429), "open_tree": (428, 428), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "open_tree_attr": (467, 467),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426), "io_uring_register": (427, 427), "kexec_load": (246, 104),
    "kexec_file_load": (320, 294), "reboot": (169, 142), "init_module": (175, 105),
    "finit_module": (313, 273), "delete_module": (176, 106), "swapon": (167, 224),
    "swapoff": (168, 225), "acct": (163, 89), "settimeofday": (164, 170),
    "clock_settime": (227, 112), "adjtimex": (159, 171), "clock_adjtime": (305, 266),
    "sethostname": (170, 161), "setdomainname": (171, 162), "iopl": (172, None),
    "ioperm": (173, None), "syslog": (103, 116), "quotactl": (179, 60), "mknod": (133, None),
    "mknodat": (259, 33), "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265),
    "capset": (126, 91),
}  # fmt: skip
# Checked on their arguments: (x86-64, arm64).
_CLONE, _CLONE3, _PRCTL, _PRLIMIT64, _SECCOMP = (
    (56, 220),
    (435, 435),
    (157, 167),
    (302, 261),
    (317, 277),
)
_ARCHES = {
    "x86_64": (0, 0xC000003E),
    "amd64": (0, 0xC000003E),
    "aarch64": (1, 0xC00000B7),
    "arm64": (1, 0xC00000B7),
}
_CLONE_THREAD, _PR_SET_MM = 0x10000, 35
_RET_ALLOW, _RET_ERRNO, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000, 1, 38
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


def _seccomp_program(arch):
    """The filter as (code, jt, jf, k) tuples; jumps name labels, resolved at the end.

    Process creation is allowed only as a thread (clone with CLONE_THREAD; clone3 answers ENOSYS,
    whose flags a filter cannot read, so glibc falls back to clone); prlimit64 only to read a
    limit; prctl never to clear the parent-death signal or rewrite the memory map; every other
    listed call fails with EPERM, which Python raises as PermissionError.
    """
    column, audit_arch = _ARCHES[arch]
    program, labels = [], {}

    def op(code, k=0, jt=0, jf=0):
        program.append([code, jt, jf, k])

    op(_LD_ABS, 4)  # seccomp_data.arch
    op(_JEQ, audit_arch, 0, "deny")  # a foreign ABI (32-bit calls on x86-64) gets nothing
    op(_LD_ABS, 0)  # seccomp_data.nr
    if column == 0:
        op(_JGE, 0x40000000, "deny", 0)  # the x32 ABI
    op(_JEQ, _CLONE[column], "clone", 0)
    op(_JEQ, _CLONE3[column], "enosys", 0)
    op(_JEQ, _PRCTL[column], "prctl", 0)
    op(_JEQ, _PRLIMIT64[column], "prlimit", 0)
    for numbers in _DENIED.values():
        if numbers[column] is not None:
            op(_JEQ, numbers[column], "deny", 0)
    op(_RET, _RET_ALLOW)
    labels["clone"] = len(program)
    op(_LD_ABS, 16)  # args[0], low half (little-endian): the clone flags
    op(_JSET, _CLONE_THREAD, "allow", "deny")
    labels["prctl"] = len(program)
    op(_LD_ABS, 16)
    op(_JEQ, _PR_SET_PDEATHSIG, "deny", 0)
    op(_JEQ, _PR_SET_MM, "deny", "allow")
    labels["prlimit"] = len(program)
    op(_LD_ABS, 32)  # args[2], the new limit: only NULL (a read) is allowed
    op(_JEQ, 0, 0, "deny")
    op(_LD_ABS, 36)
    op(_JEQ, 0, "allow", "deny")
    # The returns come last: classic BPF jumps only forward, and a filter must end with a return.
    for label, action in (("enosys", _ENOSYS), ("allow", None), ("deny", _EPERM)):
        labels[label] = len(program)
        op(_RET, _RET_ALLOW if action is None else _RET_ERRNO | action)
    for index, instruction in enumerate(program):
        for slot in (1, 2):
            if isinstance(instruction[slot], str):
                instruction[slot] = labels[instruction[slot]] - index - 1
    return [tuple(instruction) for instruction in program]


def _seccomp():
    """Install the filter on this (single-threaded) process; None where the kernel has no seccomp."""
    arch = os.uname().machine.lower()
    if arch not in _ARCHES or sys.byteorder != "little" or sys.maxsize < 2**32:
        return None
    try:
        ctypes, libc = _libc()
    except OSError:
        return None

    import struct

    instructions = _seccomp_program(arch)
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in instructions))
    # struct sock_fprog: an unsigned short count, then (aligned) a pointer to the instructions.
    program = ctypes.create_string_buffer(struct.pack("=HxxxxxxQ", len(instructions), ctypes.addressof(code)))  # fmt: skip
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # seccomp(SET_MODE_FILTER, TSYNC): every thread at once; prctl on kernels without the call.
    number = _SECCOMP[_ARCHES[arch][0]]
    if libc.syscall(number, ctypes.c_uint(1), ctypes.c_uint(1), ctypes.byref(program)) == 0:
        return "seccomp"
    return "seccomp" if libc.prctl(_PR_SET_SECCOMP, 2, ctypes.byref(program), 0, 0) == 0 else None


# --- the audit hook -----------------------------------------------------------------------------

_BLOCKED_EVENTS = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.startfile", "subprocess.Popen", "pty.spawn", "signal.pthread_kill",
    "socket.", "ctypes.", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "sys._current_frames", "sys.setprofile", "sys.settrace", "resource.prlimit",
    "resource.setrlimit", "sqlite3.enable_load_extension", "sqlite3.load_extension",
    "winreg.", "_winapi.",
)  # fmt: skip
# Modules that run code outside this interpreter's audit hook (subinterpreters have none) or call
# C without an audit event; `_posixsubprocess` is loaded (and its fork_exec disarmed) beforehand,
# so only a fresh copy of it raises an import event.
_BLOCKED_IMPORTS = (
    "_posixsubprocess",
    "_xxsubinterpreters",
    "_xxinterpchannels",
    "_interp",
    "_test",
)
# Which arguments of each event name a path, and which argument is that path's dir_fd (or None).
_PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),), "os.truncate": ((0, None),), "os.utime": ((0, 3),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((0, 2), (1, 2)),
    "shutil.rmtree": ((0, 1),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
    "os.chflags": ((0, None),), "os.lchflags": ((0, None),), "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
}  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_DIRECTORY_FLAGS = getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_PATH", 0)


def _install_audit_hook(workdir, files_confined=False):
    """Refuse dangerous operations at the Python level (PEP 578); the hook cannot be removed.

    Paths are resolved as the kernel would: an fd through /proc/self/fd, a relative path against
    its dir_fd. The working directory stays `workdir` (chdir is refused) and no directory outside
    it can be opened, so no relative path can be resolved against anything else. Where no kernel
    layer confines files (`files_confined` False), sqlite3, which opens files in C, is refused.
    """
    workdir = os.path.realpath(workdir)
    own_proc = f"/proc/{os.getpid()}"
    # Bound now, as locals of the hook's closure: user code that replaces os.path.realpath later
    # cannot change what the hook sees (and replacing a function's __code__ is refused below).
    realpath, fsdecode, startswith, join = (
        os.path.realpath,
        os.fsdecode,
        str.startswith,
        os.path.join,
    )
    isabs, isdir, permission = os.path.isabs, os.path.isdir, PermissionError

    def resolve(path, dir_fd=None):
        if isinstance(path, int):
            return realpath(f"/proc/self/fd/{path}")
        path = fsdecode(path)
        if dir_fd is not None and dir_fd >= 0 and not isabs(path):
            path = join(realpath(f"/proc/self/fd/{dir_fd}"), path)
        return realpath(path)

    def inside(real):
        return real == workdir or startswith(real, workdir + os.sep)

    def other_process(real):
        if not startswith(real, "/proc/"):
            return False
        head = real[6:].split("/", 1)[0]
        return head.isdigit() and real != own_proc and not startswith(real, own_proc + "/")

    def check_open(path, mode, flags):
        if isinstance(path, int):  # wrapping an fd this process already holds
            return
        real = resolve(path)
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & _WRITE_FLAGS
        )
        if writing and not inside(real):
            raise permission(
                f"sandbox: writing outside the working directory is not allowed ({path})"
            )
        if other_process(real):
            raise permission(
                f"sandbox: reading another process's /proc entry is not allowed ({path})"
            )
        if not inside(real) and (mode is None and flags & _DIRECTORY_FLAGS or isdir(real)):
            raise permission(f"sandbox: opening a directory outside the working directory is not allowed ({path})")  # fmt: skip

    def check_paths(event, args):
        for index, dir_index in _PATH_EVENTS[event]:
            if index >= len(args) or args[index] is None:
                continue
            dir_fd = args[dir_index] if dir_index is not None and dir_index < len(args) else None
            if not inside(resolve(args[index], dir_fd)):
                raise permission(f"sandbox: {event} outside the working directory is not allowed")

    def hook(event, args):
        if event == "open":
            check_open(*args)
        elif event in _PATH_EVENTS:
            check_paths(event, args)
        elif event == "os.chdir":
            if resolve(args[0]) != workdir:
                raise permission("sandbox: changing the working directory is not allowed")
        elif event == "import":
            if startswith(args[0], _BLOCKED_IMPORTS):
                raise ImportError(f"sandbox: importing {args[0]} is not allowed in a python grader")
        elif event == "sqlite3.connect":
            database = fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else ""
            if (
                not files_confined
                or startswith(database, "file:")
                or (database not in ("", ":memory:") and not inside(resolve(database)))
            ):
                raise permission("sandbox: sqlite3 is allowed only on a database inside the working directory, and only where a kernel layer confines files")  # fmt: skip
        elif event.startswith(_BLOCKED_EVENTS):
            raise permission(f"sandbox: {event} is not allowed in a python grader")
        elif event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise permission("sandbox: replacing a function's code is not allowed")

    _disarm_fork_exec()
    sys.addaudithook(hook)
    return "audit"


def _disarm_fork_exec():
    """`_posixsubprocess.fork_exec` forks and runs a Python callback with no audit event (subprocess
    raises its own before calling it): replace it, before anything imports subprocess."""
    try:
        import _posixsubprocess
    except ImportError:
        return

    def fork_exec(*args, **kwargs):
        raise PermissionError("sandbox: starting a process is not allowed in a python grader")

    _posixsubprocess.fork_exec = fork_exec
