# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the DPS modules.

Each fragment documents exactly what one argspec builder returns, so DOCUMENTATION and argument_spec cannot drift
apart:
- C(iotfleet.aziot.dps): plugins/module_utils/_dps.py dps_connection_argument_spec()
- C(iotfleet.aziot.dps.service_auth): plugins/module_utils/_dps_service.py dps_service_auth_argument_spec()
- C(iotfleet.aziot.dps.action_group): membership of the action group C(dps_service) in meta/runtime.yml
"""

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of every module that talks to DPS (device API and service API).
    DOCUMENTATION = r"""
options:
  ca_path:
    description:
      - PEM file of the CA certificates that sign the DPS server certificate, on the host that runs the module.
      - Default is the system trust store. Set it for a private CA, for example the local DPS emulator's.
    type: path
  validate_certs:
    description:
      - Whether to verify the DPS server certificate. Only turn off for tests; a warning is emitted.
    type: bool
    default: true
  timeout:
    description:
      - Overall time limit in seconds for everything the task sends to DPS, retries and waits included.
      - HTTP 429, 5xx and connection errors are retried within it, honouring C(Retry-After).
    type: int
    default: 120
  request_timeout:
    description: Time limit in seconds for a single HTTP request.
    type: int
    default: 30
"""

    # How the service API modules authenticate: a shared access policy of the DPS instance.
    SERVICE_AUTH = r"""
options:
  connection_string:
    description:
      - The connection string of a DPS shared access policy,
        C(HostName=<dps>.azure-devices-provisioning.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)
        (Azure portal, DPS, Shared access policies).
      - Mutually exclusive with O(service_host), O(policy_name) and O(policy_key); one of O(connection_string) and
        O(service_host) is required.
    type: str
  service_host:
    description:
      - The DPS service host name, C(<dps>.azure-devices-provisioning.net) (not the global device endpoint), or
        C(host:port) for an emulator.
      - Requires O(policy_name) and O(policy_key).
    type: str
  policy_name:
    description: The name of the shared access policy, for example V(provisioningserviceowner).
    type: str
  policy_key:
    description: The policy's key (base64), primary or secondary.
    type: str
notes:
  - A shared access signature is made for every request with a lifetime of five minutes, so the controller clock
    must be right to within a few minutes.
  - The policy needs C(EnrollmentRead) to read enrollments, C(EnrollmentWrite) to change them,
    C(RegistrationStatusRead) to read registration records and C(RegistrationStatusWrite) to delete them.
"""

    # The service API modules form the action group dps_service (meta/runtime.yml), so that a play can set the
    # connection once: module_defaults: {group/iotfleet.aziot.dps_service: {connection_string: ...}}.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/iotfleet.aziot.dps_service) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - iotfleet.aziot.dps_service
"""
