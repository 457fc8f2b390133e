/* azote-guest linker script; run through the C preprocessor for layout.h. */
#include "layout.h"

OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(azote_entry64)

PHDRS {
  fixed  PT_LOAD FLAGS(6);
  kstack PT_LOAD FLAGS(6);
  text   PT_LOAD FLAGS(5);
  rodata PT_LOAD FLAGS(4);
  data   PT_LOAD FLAGS(6);
  note   PT_NOTE FLAGS(4);
}

SECTIONS {
  . = AZ_IMAGE_BASE;
  __image_start = .;

  .fixed : {
    KEEP(*(.fixed.pml4))
    KEEP(*(.fixed.pdpt))
    KEEP(*(.fixed.pd))
    KEEP(*(.fixed.sys))
  } :fixed

  .kstack AZ_KSTACK (NOLOAD) : {
    . += AZ_KSTACK_END - AZ_KSTACK;
  } :kstack

  .text AZ_TEXT : {
    KEEP(*(.text.isr))
    *(.text.boot)
    *(.text .text.*)
  } :text

  .rodata : ALIGN(4096) {
    *(.rodata .rodata.*)
  } :rodata

  .note : ALIGN(4) {
    KEEP(*(.note.azote))
  } :rodata :note

  .data : ALIGN(4096) {
    *(.data .data.*)
  } :data

  .bss : ALIGN(64) {
    __bss_start = .;
    *(.bss .bss.*)
    *(COMMON)
    . = ALIGN(64);
    __bss_end = .;
  } :data

  .ustack (NOLOAD) : ALIGN(4096) {
    . += AZ_USTACK_SIZE;
    azote_ustack_top = .;
  } :data

  __image_end = .;

  /DISCARD/ : {
    *(.eh_frame*) *(.comment) *(.note.gnu.*) *(.note.GNU-stack) *(.interp) *(.dynamic)
  }
}

ASSERT(azote_pml4 == AZ_PML4, "PML4 is not at AZ_PML4")
ASSERT(azote_pdpt == AZ_PDPT, "PDPT is not at AZ_PDPT")
ASSERT(azote_pd == AZ_PD, "page directories are not at AZ_PD")
ASSERT(azote_sys == AZ_SYS, "system page is not at AZ_SYS")
ASSERT(SIZEOF(.fixed) == AZ_KSTACK - AZ_IMAGE_BASE, ".fixed has an unexpected size")
ASSERT(azote_isr_stubs == AZ_STUBS, "exception stubs are not at AZ_STUBS")
ASSERT(__image_end <= 0x200000, "image must fit below 2 MiB")
