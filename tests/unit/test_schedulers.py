import pytest

from imageinference.engines.samplers.schedulers import SCHEDULER_NAMES, SCHEDULERS, lookup

# The 75 values in schema order, as listed by the API reference (§4) and both seed pages ("75 values").
DOCUMENTED = """DDIM|DDIMScheduler|DDPMScheduler|DEISMultistepScheduler|Default|DPM++|DPM++ 2M|DPM++ 2M Beta|
DPM++ 2M Exponential|DPM++ 2M Karras|DPM++ 2M SDE|DPM++ 2M SDE Beta|DPM++ 2M SDE Exponential|DPM++ 2M SDE Karras|
DPM++ 2M SDE Uniform|DPM++ 2M Uniform|DPM++ 3M|DPM++ 3M Beta|DPM++ 3M Exponential|DPM++ 3M Karras|
DPM++ 3M SDE Uniform|DPM++ 3M Uniform|DPM++ Beta|DPM++ Exponential|DPM++ Karras|DPM++ SDE|DPM++ SDE Beta|
DPM++ SDE Exponential|DPM++ SDE Karras|DPM++ Uniform|DPM++ Uniform Beta|DPM++ Uniform Exponential|
DPM++ Uniform Karras|DPMSolverMultistepInverse|DPMSolverMultistepScheduler|DPMSolverSinglestepScheduler|
EDMDPMSolverMultistepScheduler|EDMEulerScheduler|Euler|Euler a|Euler Beta|Euler Exponential|Euler Karras|
EulerAncestralDiscreteScheduler|EulerDiscreteScheduler|FlowMatchEulerDiscreteScheduler|Heun|HeunDiscreteScheduler|
Heun Karras|IPNDMScheduler|IPNDM Uniform|IPNDM Uniform Beta|IPNDM Uniform Exponential|IPNDM Uniform Karras|
KDPM2AncestralDiscreteScheduler|KDPM2DiscreteScheduler|LCM|LCMScheduler|LMS|LMSDiscreteScheduler|LMS Karras|
PNDMScheduler|TCDScheduler|UniPC|UniPC 2M|UniPC 2M Karras|UniPC 2M Uniform|UniPC 3M|UniPC 3M Karras|
UniPC 3M Uniform|UniPC Karras|UniPC Uniform|UniPC Uniform Beta|UniPC Uniform Exponential|UniPC Uniform Karras"""
DOCUMENTED_NAMES = [n.strip() for n in DOCUMENTED.replace("\n", "").split("|")]


def test_exactly_the_75_documented_names_in_order():
    assert len(DOCUMENTED_NAMES) == 75
    assert list(SCHEDULER_NAMES) == DOCUMENTED_NAMES


@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_suffix_decides_the_sigma_schedule(name):
    mapping = lookup(name)
    for family in ("flow", "eps"):
        _sampler, schedule = mapping.resolve(family)
        if name.endswith("Karras"):
            assert schedule == "karras"
        elif name.endswith("Beta"):
            assert schedule == "beta"
        elif name.endswith("Exponential"):
            assert schedule == "exponential"


@pytest.mark.parametrize("name", DOCUMENTED_NAMES)
def test_approximations_say_why(name):
    mapping = lookup(name)
    assert mapping.exact or mapping.note, f"{name} is an approximation without a reason"


def test_family_dependent_names():
    assert lookup("Euler").resolve("flow") == ("euler", "simple")
    assert lookup("Euler").resolve("eps") == ("euler", "normal")
    assert lookup("Default").resolve("flow") == ("euler", "simple")
    assert lookup("FlowMatchEulerDiscreteScheduler").resolve("eps") == ("euler", "simple")
    assert lookup("DPM++ 2M SDE Karras").resolve("flow") == ("dpmpp_2m_sde", "karras")


def test_stochastic_flags():
    stochastic = {n for n, m in SCHEDULERS.items() if m.stochastic}
    assert {"Euler a", "DPM++ SDE", "DPM++ 2M SDE Karras", "LCM", "DDPMScheduler"} <= stochastic
    assert not stochastic & {"Euler", "DPM++ 2M Karras", "UniPC", "DDIM", "Heun"}


def test_unknown_name_is_a_key_error():
    with pytest.raises(KeyError):
        lookup("euler")  # ComfyUI's spelling is not an API name
