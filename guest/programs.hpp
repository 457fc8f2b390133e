// Programs that live in their own translation unit.
#pragma once

#include "platform.hpp"

namespace az {

// `smp [x2apic]`: start every CPU the firmware lists (INIT-SIPI-SIPI), each prints
// "cpu K online" from user mode; exit 0 when all did, 1 on timeout. `x2apic`
// first switches the BSP's local APIC to x2APIC mode (IPIs through MSRs).
[[noreturn]] void prog_smp(const Args& args);

}  // namespace az
