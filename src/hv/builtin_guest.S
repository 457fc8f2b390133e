/* The built-in guest ELF, embedded read-only in azote-hv (booted by --kernel builtin:NAME). */
	.section .rodata.azote_builtin_guest, "a"
	.balign 16
	.globl azote_builtin_guest_start
azote_builtin_guest_start:
	.incbin AZOTE_GUEST_ELF
	.globl azote_builtin_guest_end
azote_builtin_guest_end:
	.section .note.GNU-stack, "", @progbits
