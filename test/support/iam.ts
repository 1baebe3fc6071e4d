/**
 * A small model of IAM for the policy tests: what IAM refuses to store (`policyProblems`: a
 * Resource that is neither `*` nor an ARN, a policy variable outside an ARN's trailing part, an
 * unknown condition operator, …) and how it evaluates Allow statements (`allows`: action and
 * resource wildcards, policy variables, and the condition operators the shipped policies use).
 * It is no substitute for IAM, only a check that a policy says what its tests claim; the real
 * linter (parliament, test/iam_lint_test.ts) checks the rest.
 */

export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

export interface PolicyDocument {
  Version: string;
  Statement: Statement[];
}

/**
 * The instance policy's self-termination statement as it once was: Resource
 * `${ec2:SourceInstanceARN}`, which IAM refuses (a policy variable is allowed only in an ARN's
 * trailing part) and parliament flags; kept for the tests that prove both checks catch it.
 */
export const OLD_SELF_TERMINATE_POLICY: PolicyDocument = {
  Version: "2012-10-17",
  Statement: [{
    Sid: "TerminateItself",
    Effect: "Allow",
    Action: ["ec2:TerminateInstances"],
    Resource: "${ec2:SourceInstanceARN}",
    Condition: { StringEquals: { "aws:ResourceTag/AllowSelfTermination": "true" } },
  }],
};

/** A request as IAM sees it: the action, the resource's ARN, and the request's condition keys. */
export interface Request {
  action: string;
  resource: string;
  /** Condition keys present in the request; a list for multivalued keys. */
  context: Record<string, string | string[]>;
}

export function list<T>(value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

/** The condition operators this model evaluates (IAM knows more; the policies use only these). */
const OPERATORS = [
  "StringEquals",
  "StringLike",
  "ArnEquals",
  "ArnLike",
  "Null",
  "ForAllValues:StringEquals",
];

/**
 * What makes IAM reject the document (`MalformedPolicyDocument`) or this model unable to judge it,
 * each naming the statement and the offending value; empty when there is nothing.
 */
export function policyProblems(doc: PolicyDocument): string[] {
  const problems: string[] = [];
  if (doc.Version !== "2012-10-17") {
    problems.push(`Version is ${JSON.stringify(doc.Version)}, expected "2012-10-17"`);
  }
  if (!Array.isArray(doc.Statement) || doc.Statement.length === 0) {
    problems.push("Statement is not a non-empty list");
    return problems;
  }
  doc.Statement.forEach((s, i) => {
    const name = s.Sid ?? `#${i + 1}`;
    if (s.Effect !== "Allow" && s.Effect !== "Deny") {
      problems.push(`${name}: Effect ${JSON.stringify(s.Effect)} is not Allow or Deny`);
    }
    const actions = list(s.Action);
    if (actions.length === 0) problems.push(`${name}: no Action`);
    for (const action of actions) {
      if (!/^[a-z0-9-]+:[A-Za-z0-9*]+$/.test(action)) {
        problems.push(`${name}: Action ${action} is not service:Operation`);
      }
    }
    const resources = list(s.Resource);
    if (resources.length === 0) problems.push(`${name}: no Resource`);
    for (const resource of resources) {
      const problem = resourceProblem(resource);
      if (problem) problems.push(`${name}: Resource ${resource} ${problem}`);
    }
    for (const [operator, keys] of Object.entries(s.Condition ?? {})) {
      if (!OPERATORS.includes(operator)) {
        problems.push(`${name}: condition operator ${operator} is not one this model knows`);
      }
      for (const key of Object.keys(keys)) {
        if (!/^[a-z0-9-]+:[A-Za-z0-9/_:.-]+$/.test(key)) {
          problems.push(`${name}: condition key ${key} is not prefix:name`);
        }
      }
    }
  });
  return problems;
}

/**
 * Why IAM refuses a Resource, or undefined: it must be `*` or
 * `arn:partition:service:region:account:resource`, and policy variables (`${…}`) may stand only
 * in the trailing resource part.
 */
export function resourceProblem(resource: string): string | undefined {
  if (resource === "*") return undefined;
  if (!resource.startsWith("arn:")) return "is not an ARN or *";
  const parts = resource.split(":");
  if (parts.length < 6) return "is not an ARN (arn:partition:service:region:account:resource)";
  const head = parts.slice(0, 5).join(":");
  if (head.includes("${")) return "has a policy variable outside the ARN's resource part";
  if (!/^[a-z0-9-]+$/.test(parts[2])) return "has no service";
  return undefined;
}

/** `*` and `?` wildcards, matched against the whole value. */
export function wildcard(pattern: string, value: string): boolean {
  const re = [...pattern].map((c) =>
    c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.+^${}()|[\]\\]/g, "\\$&")
  ).join("");
  return new RegExp(`^${re}$`, "s").test(value);
}

/** `${key}` policy variables resolved from the request; undefined when one has no value. */
export function resolve(text: string, context: Request["context"]): string | undefined {
  let missing = false;
  const out = text.replace(/\$\{([^}]+)\}/g, (_, key: string) => {
    const value = context[key];
    if (typeof value !== "string") missing = true;
    return typeof value === "string" ? value : "";
  });
  return missing ? undefined : out;
}

/** ArnEquals/ArnLike: each of the six colon-separated parts compared on its own, with wildcards. */
function arnMatches(pattern: string, value: string): boolean {
  const p = pattern.split(":");
  const v = value.split(":");
  if (p.length < 6 || v.length < 6) return false;
  const six = (parts: string[]) => [...parts.slice(0, 5), parts.slice(5).join(":")];
  return six(p).every((part, i) => wildcard(part, six(v)[i]));
}

function conditionHolds(statement: Statement, context: Request["context"]): boolean {
  for (const [operator, keys] of Object.entries(statement.Condition ?? {})) {
    for (const [key, allowedRaw] of Object.entries(keys)) {
      const values = context[key];
      // A policy variable with no value in the request matches nothing.
      const allowed = list(allowedRaw).map((a) => resolve(a, context)).filter((a) =>
        a !== undefined
      ) as string[];
      if (operator === "Null") {
        if ((values === undefined) !== (list(allowedRaw)[0] === "true")) return false;
      } else if (operator.startsWith("ForAllValues:")) {
        // True when the key is absent, as in IAM: use it only where the key is always present.
        if (values !== undefined && !list(values).every((v) => allowed.includes(v))) return false;
      } else {
        if (typeof values !== "string") return false; // absent key: the condition fails
        const match = operator === "StringEquals"
          ? allowed.includes(values)
          : operator === "StringLike"
          ? allowed.some((a) => wildcard(a, values))
          : allowed.some((a) => arnMatches(a, values));
        if (!match) return false;
      }
    }
  }
  return true;
}

/**
 * The Sids of the Allow statements that allow the request. Throws, as IAM refuses to store it,
 * when the document has a problem `policyProblems` names.
 */
export function allows(doc: PolicyDocument, request: Request): string[] {
  const problems = policyProblems(doc);
  if (problems.length > 0) throw new Error(`MalformedPolicyDocument: ${problems.join("; ")}`);
  return doc.Statement.filter((s) =>
    s.Effect === "Allow" &&
    list(s.Action).some((a) => wildcard(a, request.action)) &&
    list(s.Resource).some((r) => {
      const pattern = resolve(r, request.context);
      return pattern !== undefined && wildcard(pattern, request.resource);
    }) &&
    conditionHolds(s, request.context)
  ).map((s) => s.Sid ?? "");
}

/**
 * The context IAM builds for `ec2:TerminateInstances` on `target` (an instance ARN): `aws:ARN` and
 * `ec2:InstanceID` name the target, its tags are `aws:ResourceTag/…` and `ec2:ResourceTag/…`,
 * `aws:RequestedRegion` is the target's region (EC2 acts only on its own region's instances),
 * `aws:PrincipalAccount` the caller's account (the source's, else the target's), and
 * `ec2:SourceInstanceARN` is present only for a request signed with an instance profile's
 * credentials (`source`, the instance they were issued to).
 */
export function terminateRequest(
  target: string,
  options: { source?: string; tags?: Record<string, string> },
): Request {
  const context: Request["context"] = {
    "aws:ARN": target,
    "ec2:InstanceID": target.split("/").pop()!,
    "aws:RequestedRegion": target.split(":")[3],
    "aws:PrincipalAccount": (options.source ?? target).split(":")[4],
  };
  for (const [key, value] of Object.entries(options.tags ?? {})) {
    context[`aws:ResourceTag/${key}`] = value;
    context[`ec2:ResourceTag/${key}`] = value;
  }
  if (options.source) context["ec2:SourceInstanceARN"] = options.source;
  return { action: "ec2:TerminateInstances", resource: target, context };
}
