/**
 * The launch-template task's inputs: their specs, what the task cannot run without, and the parser
 * of its section of the desired state. Only lib/launch_template.ts and lib/config.ts import this.
 *
 * @module
 */
import type { Names } from "./config.ts";
import { OWNER_TAG } from "./contract.ts";
import {
  checkIds,
  FILE_INPUT_MAX_BYTES,
  type InputSpec,
  type Reader,
  type ReadTextFile,
  type Requirements,
  SECURITY_GROUP,
  show,
} from "./inputs.ts";

/** The launch-template task's inputs, in `--help` order. */
export const INPUTS: InputSpec[] = [
  {
    name: "launch-template-name",
    env: ["REFRESH_LAUNCH_TEMPLATE_NAME"],
    kind: "string",
    default: "<owner>-<repo>-ci-launch-template",
    help: "name of the EC2 launch template",
  },
  { name: "ami", env: ["REFRESH_AMI"], kind: "string", help: "AMI id (ami-…) runners boot" },
  {
    name: "ami-name",
    env: ["REFRESH_AMI_NAME"],
    kind: "string",
    help: "instead of --ami: name pattern (with *), newest match by creation date",
  },
  {
    name: "ami-owners",
    env: ["REFRESH_AMI_OWNERS"],
    kind: "list",
    default: "self",
    help: "owners searched with --ami-name (account ids, self, amazon, …)",
  },
  {
    name: "iam-instance-profile",
    env: ["REFRESH_IAM_INSTANCE_PROFILE"],
    kind: "string",
    help: "IAM instance profile name or ARN for runners",
  },
  {
    name: "security-group-ids",
    env: ["REFRESH_SECURITY_GROUP_IDS"],
    kind: "list",
    help: "security groups of runners (comma or space separated)",
  },
  {
    name: "user-data",
    env: ["REFRESH_USER_DATA"],
    kind: "string",
    help: "file whose content is the instances' user data (at most 16 KB)",
  },
  {
    name: "instance-type",
    env: ["REFRESH_INSTANCE_TYPE"],
    kind: "string",
    help: "default instance type in the template (provision overrides it)",
  },
  { name: "key-name", env: ["REFRESH_KEY_NAME"], kind: "string", help: "EC2 key pair name" },
  {
    name: "root-volume-size",
    env: ["REFRESH_ROOT_VOLUME_SIZE"],
    kind: "int",
    help: "root volume size in GiB",
  },
  {
    name: "root-volume-type",
    env: ["REFRESH_ROOT_VOLUME_TYPE"],
    kind: "string",
    default: "gp3",
    help: "root volume type (gp3, gp2, standard)",
  },
  {
    name: "root-device-name",
    env: ["REFRESH_ROOT_DEVICE_NAME"],
    kind: "string",
    default: "the AMI's root device",
    help: "device the root volume settings apply to",
  },
  {
    name: "tags",
    env: ["REFRESH_TAGS"],
    kind: "json",
    help: 'extra tags on instances and volumes, JSON {"Key": "value"}',
  },
  {
    name: "keep-versions",
    env: ["REFRESH_KEEP_VERSIONS"],
    kind: "int",
    default: "5",
    help: "launch template versions kept (the default version is never deleted)",
  },
];

/** What the launch-template task cannot run without. */
export const REQUIRED: Requirements = [
  "ami|ami-name",
  "iam-instance-profile",
  "security-group-ids",
];

export type AmiSource = { id: string } | { namePattern: string; owners: string[] };

/** The launch-template task's section of the desired state. */
export interface DesiredLaunchTemplate {
  name: string;
  ami?: AmiSource;
  iamInstanceProfile?: { name: string } | { arn: string };
  securityGroupIds: string[];
  /** The user data script itself; only its hash is ever stored or printed. */
  userData: string;
  instanceType?: string;
  keyName?: string;
  /** Settings of the root volume; the device defaults to the AMI's root device. */
  rootVolume: { deviceName?: string; sizeGiB?: number; type: string };
  tags: Record<string, string>;
  keepVersions: number;
}

/** The 16 KB limit EC2 puts on base64-encoded user data, checked before any call. */
export const USER_DATA_MAX_BASE64 = 16 * 1024;

const AMI = /^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$/;
const AMI_OWNER = /^(?:\d{12}|self|amazon|aws-marketplace|aws-backup-vault)$/;

/** Reads the launch-template task's inputs, recording problems on the reader. */
export function parseLaunchTemplate(
  r: Reader,
  { stem }: Names,
  readTextFile: ReadTextFile,
): DesiredLaunchTemplate {
  const problems = r.problems;
  const ltName = r.string("launch-template-name") ?? `${stem}-ci-launch-template`;
  if (!/^[a-zA-Z0-9().\-/_]{3,128}$/.test(ltName)) {
    problems.push(
      `launch-template-name: "${ltName}" must be 3-128 of letters, digits and ( ) . - / _`,
    );
  }
  let ami: AmiSource | undefined;
  const amiId = r.string("ami");
  const amiName = r.string("ami-name");
  if (amiId !== undefined && amiName !== undefined) {
    problems.push("ami: set either --ami or --ami-name, not both");
  } else if (amiId !== undefined) {
    if (!AMI.test(amiId)) {
      problems.push(`ami: "${amiId}" is not an AMI id (ami- and 8 or 17 hex digits)`);
    } else ami = { id: amiId };
  } else if (amiName !== undefined) {
    if (!/^[\w ()[\]./'@*?-]{1,128}$/.test(amiName)) {
      problems.push(
        `ami-name: "${amiName}" is not an AMI name pattern (1-128 of letters, digits, space, ( ) [ ] . / - ' @ _ and the wildcards * ?)`,
      );
    }
    const owners = checkIds(
      "ami-owners",
      r.list("ami-owners") ?? [],
      AMI_OWNER,
      "an account id (12 digits), self, amazon, aws-marketplace or aws-backup-vault",
      problems,
    );
    if (owners?.length === 0) problems.push("ami-owners: expected at least one owner");
    ami = { namePattern: amiName, owners: owners ?? [] };
  }
  if (amiName === undefined && r.has("ami-owners")) {
    problems.push("ami-owners: only used with --ami-name; remove it or set --ami-name");
  }
  let iamInstanceProfile: { name: string } | { arn: string } | undefined;
  const profile = r.string("iam-instance-profile");
  if (profile !== undefined) {
    if (profile.startsWith("arn:")) {
      if (!/^arn:aws[a-z-]*:iam::\d{12}:instance-profile\/[\w+=,.@/-]+$/.test(profile)) {
        problems.push(`iam-instance-profile: "${profile}" is not an instance profile ARN`);
      } else iamInstanceProfile = { arn: profile };
    } else if (!/^[\w+=,.@-]{1,128}$/.test(profile)) {
      problems.push(`iam-instance-profile: "${profile}" is not an instance profile name`);
    } else iamInstanceProfile = { name: profile };
  }
  const securityGroupIds = checkIds(
    "security-group-ids",
    r.list("security-group-ids"),
    SECURITY_GROUP,
    "a security group id (sg-…)",
    problems,
  );
  let userData = "";
  const userDataPath = r.string("user-data");
  if (userDataPath !== undefined) {
    try {
      userData = readTextFile(userDataPath, FILE_INPUT_MAX_BYTES);
      const size = base64Length(userData);
      if (size > USER_DATA_MAX_BASE64) {
        problems.push(
          `user-data: ${userDataPath} is ${size} bytes base64-encoded; EC2 allows at most ${USER_DATA_MAX_BASE64}`,
        );
      }
    } catch (error) {
      problems.push(`user-data: cannot read ${userDataPath}: ${(error as Error).message}`);
    }
  }
  const instanceType = r.string("instance-type");
  if (instanceType !== undefined && !/^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(instanceType)) {
    problems.push(`instance-type: "${instanceType}" is not an instance type like m7i.large`);
  }
  const keyName = r.string("key-name");
  if (keyName !== undefined && !/^[\x20-\x7e]{1,255}$/.test(keyName)) {
    problems.push(`key-name: "${keyName}" is not a key pair name (1-255 ASCII characters)`);
  }
  const rootSize = r.int("root-volume-size", 1, 16384);
  const rootType = r.string("root-volume-type") ?? "gp3";
  if (!["gp3", "gp2", "standard"].includes(rootType)) {
    problems.push(
      `root-volume-type: "${rootType}" is not one of gp3, gp2, standard (io1 and io2 need provisioned IOPS, st1 and sc1 cannot boot)`,
    );
  } else if (rootType === "standard" && rootSize !== undefined && rootSize > 1024) {
    problems.push(
      `root-volume-size: ${rootSize} GiB exceeds 1024, the most a standard volume holds`,
    );
  }
  const rootDevice = r.string("root-device-name");
  if (rootDevice !== undefined && !/^\/dev\/[a-z][a-z0-9]*$/.test(rootDevice)) {
    problems.push(`root-device-name: "${rootDevice}" is not a device name like /dev/xvda`);
  }
  const tags: Record<string, string> = {};
  const tagsValue = r.json("tags");
  if (tagsValue !== undefined) {
    if (typeof tagsValue !== "object" || tagsValue === null || Array.isArray(tagsValue)) {
      problems.push(`tags: expected a JSON object {"Key": "value"}, got ${show(tagsValue)}`);
    } else {
      for (const [k, v] of Object.entries(tagsValue)) {
        if (typeof v !== "string") {
          problems.push(`tags: value of "${k}" must be a string, got ${show(v)}`);
        } else if (k.length === 0 || k.length > 128 || k.toLowerCase().startsWith("aws:")) {
          problems.push(`tags: key "${k}" must be 1-128 characters and not start with aws:`);
        } else if (v.length > 256) {
          problems.push(`tags: value of "${k}" is longer than 256 characters`);
        } else if (k === OWNER_TAG) {
          problems.push(`tags: key "${k}" is refresh's ownership tag (the table name); remove it`);
        } else tags[k] = v;
      }
      const count = Object.keys(tags).length;
      if (count > 49) {
        problems.push(`tags: ${count} tags given; at most 49 (EC2's 50 less the ownership tag)`);
      }
    }
  }
  const keepVersions = r.int("keep-versions", 1, 100);
  return {
    name: ltName,
    ami,
    iamInstanceProfile,
    securityGroupIds: securityGroupIds ?? [],
    userData,
    instanceType,
    keyName,
    rootVolume: { deviceName: rootDevice, sizeGiB: rootSize, type: rootType },
    tags,
    keepVersions: keepVersions!,
  };
}

function base64Length(text: string): number {
  return Math.ceil(new TextEncoder().encode(text).length / 3) * 4;
}
