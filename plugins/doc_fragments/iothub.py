# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the IoT Hub service API modules (iothub_*).

Each fragment documents exactly what one argspec builder returns, so DOCUMENTATION and argument_spec cannot drift
apart:
- C(iotfleet.aziot.iothub): plugins/module_utils/_iothub.py iothub_connection_argument_spec()
- C(iotfleet.aziot.iothub.action_group): membership of the action group C(iothub) in meta/runtime.yml
"""

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of every module that talks to an IoT Hub's service API.
    DOCUMENTATION = r"""
options:
  connection_string:
    description:
      - The connection string of a shared access policy of the IoT Hub,
        C(HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>) (Azure portal, IoT
        Hub, Security settings, Shared access policies; C(az iot hub connection-string show --policy-name <policy>)).
      - A DPS connection string or a device connection string is refused.
      - A shared access signature is made from it for every request, valid for five minutes, for the HostName as
        written here (lower-cased), so the controller clock must be right to within a few minutes.
    type: str
    required: true
  service_url:
    description:
      - Where to send the requests instead of C(https://<HostName>), for example a private endpoint or the local
        emulator (V(https://127.0.0.1:8443)). The requests are still signed for the connection string's HostName.
    type: str
  ca_path:
    description:
      - PEM file of the CA certificates that sign the IoT Hub server certificate, on the host that runs the module.
      - Default is the system trust store. Set it for a private CA, for example the local emulator's.
    type: path
  validate_certs:
    description:
      - Whether to verify the IoT Hub server certificate. Only turn off for tests; a warning is emitted.
    type: bool
    default: true
  timeout:
    description:
      - Overall time limit in seconds for everything the task sends to IoT Hub, retries and waits included.
      - HTTP 429 (IoT Hub's throttle, for example more than 20 configuration operations a minute), 5xx and connection
        errors are retried within it, honouring C(Retry-After).
    type: int
    default: 120
  request_timeout:
    description: Time limit in seconds for a single HTTP request.
    type: int
    default: 30
notes:
  - The policy needs C(RegistryRead) to read devices, twins and configurations, and C(RegistryWrite) to change them
    (the built-in policies V(iothubowner) and V(registryReadWrite) have both).
"""

    # The iothub_* modules form the action group iothub (meta/runtime.yml), so that a play can set the connection
    # once: module_defaults: {group/iotfleet.aziot.iothub: {connection_string: ...}}.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/iotfleet.aziot.iothub) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - iotfleet.aziot.iothub
"""
