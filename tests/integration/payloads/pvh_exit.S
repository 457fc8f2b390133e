/* A minimal PVH guest written by nobody's OS: entered in 32-bit protected mode with
 * paging off (per the Xen PVH ABI), it writes EXIT_CODE to the debug-exit port. */
#ifndef EXIT_CODE
#define EXIT_CODE 0
#endif
	.section .note.pvh, "a", @note
	.balign 4
	.long 4            /* namesz: "Xen\0" */
	.long 4            /* descsz */
	.long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start

	.text
	.code32
	.globl pvh_start
pvh_start:
	/* ebx must point at hvm_start_info: check its magic, exit 99 if wrong. */
	cmpl $0x336ec578, (%ebx)
	jne 1f
	movb $EXIT_CODE, %al
	outb %al, $0xf4
1:	movb $99, %al
	outb %al, $0xf4
	hlt
	.section .note.GNU-stack, "", @progbits
