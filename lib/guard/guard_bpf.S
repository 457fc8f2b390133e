/* The write guard's compiled BPF object (guard.bpf.c), embedded in the binary. */
    .section .rodata
    .balign 8
    .global azote_guard_bpf_start
azote_guard_bpf_start:
    .incbin AZOTE_GUARD_BPF_OBJ
    .global azote_guard_bpf_end
azote_guard_bpf_end:
    .section .note.GNU-stack,"",@progbits
