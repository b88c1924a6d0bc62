"""Topic names of the dial_ros graph, in one place; no rclpy.

Nodes, the recorder, the bag reader, the evaluation and the benchmarks all name topics from
here (remap at run time with ``--ros-args -r old:=new``, as usual). Their QoS profiles are
in :mod:`dial_ros.nodes.qos`, the message conversions in :mod:`dial_ros.codecs`.
"""
TOPIC_IMAGE = '/camera/head/image_raw'             # sensor_msgs/Image
TOPIC_JOINT_STATES = '/joint_states'               # sensor_msgs/JointState
TOPIC_OBSERVATION = '/dial/observation_latent'     # dial_ros/LatentTensor
# The joint state matched to each observation latent (same header.stamp as the latent).
TOPIC_OBSERVATION_JOINT_STATE = '/dial/observation_joint_state'  # sensor_msgs/JointState
TOPIC_INSTRUCTION = '/dial/instruction'            # std_msgs/String, latched
TOPIC_INTENT = '/dial/latent_intent'               # dial_ros/LatentTensor
TOPIC_CHUNK = '/dial/action_chunk'
TOPIC_COMMAND = '/dial/joint_commands'             # std_msgs/Float64MultiArray
TOPIC_TRAJECTORY = '/dial/joint_trajectory'        # trajectory_msgs/JointTrajectory
TOPIC_COMMAND_STATE = '/dial/joint_command_state'  # sensor_msgs/JointState
TOPIC_ESTOP = '/dial/estop'                        # std_msgs/Bool, true = stop
# Operator takeover: a teleop source's targets (std_msgs/Float64MultiArray, the controller's
# joint order), forwarded by the controller while yielded; who commands now (String: policy |
# teleop, latched).
TOPIC_TELEOP = '/dial/teleop/joint_commands'
TOPIC_COMMAND_SOURCE = '/dial/command_source'
TOPIC_SUCCESS = '/sim/task_success'                # std_msgs/Bool
TOPIC_OBJECT_POSE = '/sim/object_pose'             # geometry_msgs/PoseStamped
TOPIC_PROGRESS = '/sim/task_progress'              # std_msgs/Float32, 0..1 in thirds
TOPIC_EXPERT_EPISODE = '/expert/episode'           # std_msgs/String, JSON events
# The expert's clean targets when the executed commands carry DART noise:
# sensor_msgs/JointState stamped with the joint state (= camera frame) they answer.
TOPIC_EXPERT_LABEL = '/expert/action_label'
TOPIC_WRISTS = '/human/wrist_poses'                # geometry_msgs/PoseArray [right, left]
TOPIC_DIAGNOSTICS = '/diagnostics'                 # diagnostic_msgs/DiagnosticArray
# now | decoded foresight | the frame that came H steps later (dial_ros.nodes.foresight_view)
TOPIC_FORESIGHT_IMAGE = '/dial/foresight/image'    # sensor_msgs/Image rgb8
# System-2's foresight against the frame that arrived (the surprise monitor, issue 12).
TOPIC_SURPRISE = '/dial/surprise'                  # dial_ros/Surprise
