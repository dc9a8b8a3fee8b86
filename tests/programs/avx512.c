/* avx512.c: values held in AVX-512 registers (zmm16, zmm17, zmm31 and the
 * opmask k2) across checkpoints: most of the time is spent inside one asm
 * block that loads them, spins, and stores them back for checking. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "zdtm.h"

__attribute__((target("avx512f"))) static int spin_check(uint64_t seed, uint64_t iters) {
    uint64_t out[3][8];
    uint64_t k = 0;
    uint64_t a = seed, b = ~seed, c = seed * 3 + 1;
    __asm__ volatile(
        "vpbroadcastq %[a], %%zmm16\n\t"
        "vpbroadcastq %[b], %%zmm17\n\t"
        "vpbroadcastq %[c], %%zmm31\n\t"
        "mov $0xa5, %%eax\n\t"
        "kmovw %%eax, %%k2\n\t"
        "mov %[n], %%rcx\n"
        "1:\n\t"
        "dec %%rcx\n\t"
        "jnz 1b\n\t"
        "vmovdqu64 %%zmm16, 0(%[o])\n\t"
        "vmovdqu64 %%zmm17, 64(%[o])\n\t"
        "vmovdqu64 %%zmm31, 128(%[o])\n\t"
        "kmovw %%k2, %%eax\n\t"
        "mov %%rax, %[k]\n\t"
        : [k] "=r"(k)
        : [a] "r"(a), [b] "r"(b), [c] "r"(c), [n] "r"(iters), [o] "r"(out)
        : "rax", "rcx", "xmm16", "xmm17", "xmm31", "k2", "memory");
    for (int i = 0; i < 8; i++)
        if (out[0][i] != a || out[1][i] != b || out[2][i] != c)
            return 0;
    return (k & 0xffff) == 0xa5;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (!__builtin_cpu_supports("avx512f")) {
        printf("SKIP: no AVX-512 on this CPU\n");
        zdtm_ready();
        while (!zdtm_stop_requested())
            zdtm_msleep(50);
        zdtm_pass();
    }
    zdtm_ready();
    uint64_t seed = 0x0123456789abcdefULL, rounds = 0;
    while (!zdtm_stop_requested()) {
        if (!spin_check(seed + rounds, 200 * 1000 * 1000))
            zdtm_fail("AVX-512 register contents changed in round %llu", (unsigned long long)rounds);
        rounds++;
    }
    printf("rounds: %llu\n", (unsigned long long)rounds);
    zdtm_pass();
}
