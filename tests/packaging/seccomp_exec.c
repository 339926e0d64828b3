/* Run a program under the seccomp rules that systemd installs for the gpu-attest units, so the
 * sandbox can be checked where systemd is not PID 1 (tests/packaging/test_sandbox.py and the
 * GPU-host check tests/packaging/device_check.sh).
 *
 * Always: the MemoryDenyWriteExecute=yes rule (systemd src/shared/seccomp-util.c,
 * seccomp_memory_deny_write_execute): mmap with PROT_WRITE and PROT_EXEC together,
 * mprotect/pkey_mprotect adding PROT_EXEC, shmat with SHM_EXEC fail with EPERM.
 *
 * With -DALLOW_LIST: also a SystemCallFilter= allow list, read from "allowed.h" (one
 * `#ifdef __NR_x / __NR_x, / #endif` block per system call, written by the test from the
 * unit's own SystemCallFilter= lines); every other call fails with EPERM, as with
 * SystemCallErrorNumber=EPERM.
 *
 * x86-64 only; elsewhere, or without seccomp, it exits 77 so callers can skip. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SHM_EXEC
#define SHM_EXEC 0100000
#endif

#define ARG(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define NR offsetof(struct seccomp_data, nr)
#define STMT(code, k) ((struct sock_filter)BPF_STMT(code, k))
#define JUMP(code, k, jt, jf) ((struct sock_filter)BPF_JUMP(code, k, jt, jf))
#define RET_EPERM STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define RET_ALLOW STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

#ifdef ALLOW_LIST
static const long allowed[] = {
#include "allowed.h"
};
#define N_ALLOWED (sizeof(allowed) / sizeof(allowed[0]))
#else
#define N_ALLOWED 0
#endif

#if defined(__x86_64__)
static size_t build(struct sock_filter *f) {
    size_t n = 0;
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    f[n++] = RET_EPERM; /* SystemCallArchitectures=native */
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, NR);
#ifdef ALLOW_LIST
    /* Each allowed number jumps over the rest of the list to the W^X rules. */
    for (size_t i = 0; i < N_ALLOWED; i++) {
        size_t remaining = N_ALLOWED - i - 1;
        f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)allowed[i], 0, 1);
        f[n++] = STMT(BPF_JMP | BPF_JA, (unsigned)(2 * remaining + 1));
    }
    f[n++] = RET_EPERM;
#endif
    /* mmap: deny when (prot & (W|X)) == W|X */
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, NR);
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 4);
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG(2));
    f[n++] = STMT(BPF_ALU | BPF_AND | BPF_K, PROT_WRITE | PROT_EXEC);
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_WRITE | PROT_EXEC, 0, 1);
    f[n++] = RET_EPERM;
    /* mprotect / pkey_mprotect: deny any PROT_EXEC */
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, NR);
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 1, 0);
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pkey_mprotect, 0, 3);
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG(2));
    f[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1);
    f[n++] = RET_EPERM;
    /* shmat: deny SHM_EXEC */
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, NR);
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_shmat, 0, 3);
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG(2));
    f[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, SHM_EXEC, 0, 1);
    f[n++] = RET_EPERM;
    f[n++] = RET_ALLOW;
    return n;
}
#endif

int main(int argc, char **argv) {
#if !defined(__x86_64__)
    (void)argc;
    (void)argv;
    fputs("seccomp_exec: x86-64 only\n", stderr);
    return 77;
#else
    if (argc < 2) {
        fputs("usage: seccomp_exec PROGRAM [ARGS...]\n", stderr);
        return 2;
    }
    struct sock_filter *filter = calloc(2 * N_ALLOWED + 32, sizeof(*filter));
    if (filter == NULL) {
        perror("seccomp_exec: calloc");
        return 1;
    }
    struct sock_fprog prog = {(unsigned short)build(filter), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("seccomp_exec: PR_SET_NO_NEW_PRIVS");
        return 77;
    }
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("seccomp_exec: seccomp");
        return 77;
    }
    execvp(argv[1], argv + 1);
    perror("seccomp_exec: execvp");
    return 127;
#endif
}
