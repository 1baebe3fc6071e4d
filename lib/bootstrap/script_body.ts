/**
 * The generated bootstrap's fixed bash after the settings, the setup script and the AWS client:
 * its parts (lib/bootstrap/body_*.ts), one per phase, joined in the order the script runs them.
 *
 * @module
 */

import { BODY_COMMON } from "./body_common.ts";
import { BODY_AWS } from "./body_aws.ts";
import { BODY_IDENTITY } from "./body_identity.ts";
import { BODY_RUNNER_USER } from "./body_runner_user.ts";
import { BODY_RUNNER_INSTALL } from "./body_runner_install.ts";
import { BODY_REGISTRATION } from "./body_registration.ts";
import { BODY_RELEASE } from "./body_release.ts";
import { BODY_MAIN } from "./body_main.ts";

/** The script's body: every function and, last, the call to launch or agent. */
export const BODY = [
  BODY_COMMON,
  BODY_AWS,
  BODY_IDENTITY,
  BODY_RUNNER_USER,
  BODY_RUNNER_INSTALL,
  BODY_REGISTRATION,
  BODY_RELEASE,
  BODY_MAIN,
].join("");
